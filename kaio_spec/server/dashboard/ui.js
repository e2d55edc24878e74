// Page-wide pieces every view uses: the notice line, the confirmation dialog, error wording.

import { ApiError } from "./api.js";

const noticeEl = document.getElementById("notice");

export function notice(text, kind = "info") {
  noticeEl.hidden = !text;
  noticeEl.className = `notice notice-${kind}`;
  noticeEl.textContent = text || "";
}

const dialog = document.getElementById("confirm");
let settle = null;

// An in-page confirmation: resolves true only when the user presses the confirm button.
export function confirmAction(title, text, okLabel) {
  if (settle) settle(false);
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  return new Promise((resolve) => {
    settle = (value) => {
      settle = null;
      if (dialog.open) dialog.close();
      resolve(value);
    };
    dialog.showModal();
    document.getElementById("confirm-cancel").focus();
  });
}

document.getElementById("confirm-ok").addEventListener("click", () => settle && settle(true));
document.getElementById("confirm-cancel").addEventListener("click", () => settle && settle(false));
dialog.addEventListener("close", () => settle && settle(false)); // Esc

export function errorText(e) {
  if (e instanceof ApiError) return e.status ? `${e.message} (${e.status})` : e.message;
  return String(e && e.message ? e.message : e);
}

