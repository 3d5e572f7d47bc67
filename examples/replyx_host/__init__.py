"""A small FastAPI host with ReplyX's shapes, run by the end-to-end tests under uvicorn (`--workers 2`).

- `POST /api/widget/dialogs/{id}/messages?assistant_id=&guest_id=`: the visitor writes; stored with
  `sender='user'` (forced), committed, then `await client.aschedule_fallback(...)` and a broadcast.
- `GET /api/dialogs/{id}/events?token=`: the admin panel's SSE stream for one dialog (EventSource cannot
  send headers, so the token rides in the query, as in ReplyX), 404 unless the manager may see the
  dialog, lived inside `client.presence.connected(manager_id, dialog_id)`.
- `/api/notifier/...`: the kit, mounted behind the host's own Bearer-token dependency.
- `GET /admin`: a bare panel page (its EventSource, `notifier-missed.js`, `notifier-subscribe.js`).
- Every response carries `X-Worker-Pid`, so a test can show which uvicorn process answered.

Configuration: `REPLYX_SECRET` (signs tokens; required), `REPLYX_DATABASE_URL` and `REPLYX_REDIS_URL`
(default: the notifier's own), `REPLYX_SSE_HEARTBEAT_SECONDS` (15), `REPLYX_SSE_RETRY_MS` (5000), and the
notifier's `NOTIFIER_*` variables. `python -m examples.replyx_host init` creates the host's tables (with
ReplyX's production indexes) and ours; `python -m examples.replyx_host token USER_ID` prints a token.
Run: `uvicorn examples.replyx_host.app:app --workers 2`.
"""
