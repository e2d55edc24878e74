"""The routes of docs/protocol.md, one APIRouter per area, included by app.create_app in order.

meta.py       GET /healthz (version, features, isolation), GET /instances
signin.py     POST /login, POST /logout, the dashboard's one-time sign-in links
jobs.py       POST /jobs/presign, GET /jobs, a job's status, stop, archive, restore, data deleted
bulk.py       POST /jobs/stop: many jobs stopped with one request (feature jobs-stop)
packages.py   uploads: a job's package (PUT on its presigned URL), base packages /packages/<sha256>
outputs.py    what a job wrote: its output files (listed, and GET on their presigned URLs), logs,
              telemetry
dashboard.py  the web dashboard's files at / and /dashboard/, the API reference at /docs

Each route names what it uses as dependencies (deps.py); the rules it applies live beside it in
plain modules (bodies.py, uploads.py, storage.py, ../validation.py).
"""
