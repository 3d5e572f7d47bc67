/* ReplyX notifier service worker: shows the Web Push notifications the fallback worker sends.
 *
 * Payload (UTF-8 JSON, see notifier/render.py RenderedPush.payload() and RenderedClear.payload()):
 *   {"title": str, "body": str, "url": str, "dialog_id": int, "tag": "dialog-<id>"}   a notification
 *   {"type": "clear", "dialog_id": int, "tag": "dialog-<id>"}   the dialog was read or answered: close it
 * Serve this file from the admin panel's origin root so its scope covers every panel page.
 * Plain ES2017, no imports, no build step.
 */
'use strict';

const FALLBACK_TITLE = 'Новое сообщение';
const FALLBACK_BODY = 'Откройте панель, чтобы прочитать его.';
// Tag for pushes whose payload we could not read: they replace each other instead of piling up.
const FALLBACK_TAG = 'notifier';

// Never throws: a bad payload still has to produce a notification. The subscription was made with
// userVisibleOnly, so a push that shows nothing earns a browser-made "site updated in the background"
// notice, and Chrome may revoke the subscription after repeated misses.
function readPayload(event) {
  if (!event.data) return {};
  try {
    const data = event.data.json();
    return data && typeof data === 'object' && !Array.isArray(data) ? data : {};
  } catch (e) {
    return {};
  }
}

function text(value) {
  return typeof value === 'string' && value.trim() ? value : '';
}

// Absolute http(s) URL or null: a javascript:, data: or garbage URL from the payload is never opened.
function safeUrl(raw) {
  if (typeof raw !== 'string' || !raw) return null;
  try {
    const url = new URL(raw, self.registration.scope); // the worker's "#" (URL too long) means the panel root
    return url.protocol === 'https:' || url.protocol === 'http:' ? url.href : null;
  } catch (e) {
    return null;
  }
}

// The dialog was read or answered elsewhere: close its notification, show nothing. Chrome allows a site
// a few such silent pushes; past that it may add its own "updated in the background" notice.
async function clearDialog(data) {
  const tag = text(data.tag) || (Number.isInteger(data.dialog_id) ? 'dialog-' + data.dialog_id : '');
  if (!tag) return;
  const shown = await self.registration.getNotifications({ tag });
  shown.forEach((n) => n.close());
}

self.addEventListener('push', (event) => {
  const data = readPayload(event);
  if (data.type === 'clear') {
    event.waitUntil(clearDialog(data));
    return;
  }
  const title = text(data.title) || FALLBACK_TITLE;
  const body = text(data.body) || (text(data.title) ? '' : FALLBACK_BODY);
  const dialogId = Number.isInteger(data.dialog_id) ? data.dialog_id : null;
  // One tag per dialog: a newer push for the same dialog replaces the older notification.
  // renotify needs a non-empty tag (showNotification throws otherwise), hence the last fallback.
  const tag = text(data.tag) || (dialogId !== null ? 'dialog-' + dialogId : FALLBACK_TAG);
  const options = {
    body,
    tag,
    renotify: true, // a replacement still sounds/vibrates: it is a new unread message
    data: { url: safeUrl(data.url), dialog_id: dialogId },
  };
  const icon = safeUrl(data.icon); // optional; the worker does not send one today
  if (icon) options.icon = icon;
  // waitUntil keeps the worker alive until the notification is shown.
  event.waitUntil(self.registration.showNotification(title, options));
});

function sameDocument(a, b) {
  // Ignore the fragment: the panel may add one while the manager reads the dialog.
  return a.split('#')[0] === b.split('#')[0];
}

async function focusOrOpen(url) {
  const origin = new URL(url).origin;
  // includeUncontrolled: a panel tab opened before this worker was activated counts too.
  const windows = await self.clients.matchAll({ type: 'window', includeUncontrolled: true });

  const exact = windows.find((c) => sameDocument(c.url, url));
  if (exact) return exact.focus();

  const sameOrigin = windows.find((c) => new URL(c.url).origin === origin);
  if (sameOrigin) {
    try {
      // Focus first, while the click still allows it; navigate() only works on clients this worker
      // controls and rejects otherwise, in which case a new window is opened below.
      const focused = await sameOrigin.focus();
      if (typeof focused.navigate === 'function') {
        const navigated = await focused.navigate(url);
        if (navigated) return navigated;
      }
    } catch (e) {
      // fall through to openWindow
    }
  }
  return self.clients.openWindow(url);
}

self.addEventListener('notificationclick', (event) => {
  event.notification.close();
  const url = safeUrl((event.notification.data || {}).url);
  if (!url) return; // nothing safe to open: closing the notification is all we do
  event.waitUntil(focusOrOpen(url));
});

// pushsubscriptionchange: not handled here on purpose. The worker does not know the panel's save URL
// or session; the panel calls notifierSubscribe() on every load, which re-saves the current
// subscription, and the notifier drops endpoints the push service answers 404/410 for.
