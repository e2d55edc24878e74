// The API reference page (/docs): starts Swagger UI (served by this server from the package's
// pinned copy, see apidocs.py) on /openapi.json. A file, not an inline script, so that the page
// keeps the dashboard's CSP; no validator badge, which would load an image from elsewhere.

const root = document.getElementById("swagger-ui");
if (typeof window.SwaggerUIBundle === "function") {
  window.SwaggerUIBundle({
    url: "/openapi.json",
    domNode: root,
    deepLinking: true,
    validatorUrl: null,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
  });
} else {
  root.textContent = "Swagger UI is not installed with this server; the API's description is at ";
  const link = document.createElement("a");
  link.href = "/openapi.json";
  link.textContent = "/openapi.json";
  root.append(link, ".");
}
