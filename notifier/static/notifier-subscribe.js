/* ReplyX notifier: subscribe the admin panel's browser to Web Push.
 *
 * With the FastAPI kit mounted at /api/notifier, from a click on "Enable notifications":
 *
 *   button.addEventListener('click', () => notifierSubscribe({
 *     baseUrl: '/api/notifier',   // public key, subscriptions and the service worker (sw.js) under it
 *     headers: () => ({ Authorization: 'Bearer ' + localStorage.getItem('token') }),
 *     // or: fetch: (url, init) => yourAuthenticatedFetch(url, init)   (adds Authorization, X-CSRF-Token...)
 *   }));
 *
 * Without the kit, name the pieces instead: vapidPublicKey, saveUrl, deleteUrl (+ deleteMethod, default
 * 'POST' there), swUrl (default '/notifier-sw.js'), scope (default '/').
 *
 * notifierSubscribe resolves to 'subscribed', 'unsupported' (no service worker or Push API, or not a
 * secure context), 'denied' (the manager blocked notifications: only the browser's site settings undo
 * that), 'default' (the prompt was dismissed) or 'off' (the server has push turned off). It rejects,
 * with error.status and error.detail set, when the server refuses (422: the detail says why).
 * Plain ES2017, no imports; exported as window.notifierSubscribe / window.notifierUnsubscribe.
 */
(function () {
  'use strict';

  // A subscription this close to its expirationTime is replaced now rather than left to lapse.
  const EXPIRY_MARGIN_MS = 5 * 60 * 1000;

  // applicationServerKey wants the raw P-256 point as bytes; the key is published as URL-safe base64.
  function urlBase64ToUint8Array(base64) {
    const padded = (base64 + '='.repeat((4 - (base64.length % 4)) % 4)).replace(/-/g, '+').replace(/_/g, '/');
    const raw = atob(padded);
    const bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  function supported() {
    return 'serviceWorker' in navigator && 'PushManager' in window && 'Notification' in window && window.isSecureContext;
  }

  function urls(options) {
    const base = (options.baseUrl || '').replace(/\/+$/, '');
    return {
      key: options.keyUrl || (base && base + '/vapid-public-key'),
      save: options.saveUrl || (base && base + '/subscriptions'),
      remove: options.deleteUrl || (base && base + '/subscriptions'),
      // The kit takes DELETE with a JSON body; a hand-made deleteUrl keeps the POST many frameworks prefer.
      removeMethod: options.deleteMethod || (options.deleteUrl ? 'POST' : 'DELETE'),
      sw: options.swUrl || (base ? base + '/sw.js' : '/notifier-sw.js'),
      scope: options.scope || '/',
    };
  }

  // The host's way of authenticating: its own fetch function, or extra headers (an object, or a function
  // returning one, called on every request so a refreshed token is used).
  async function request(options, method, url, body) {
    const extra = typeof options.headers === 'function' ? await options.headers() : options.headers || {};
    const headers = Object.assign(body === undefined ? {} : { 'Content-Type': 'application/json' }, extra);
    const init = { method, credentials: 'same-origin', headers };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await (options.fetch || window.fetch.bind(window))(url, init);
    if (!response.ok) {
      let detail = '';
      try {
        detail = (await response.json()).detail;
      } catch (e) {
        // not JSON: the status says enough
      }
      const error = new Error('notifier: ' + method + ' ' + url + ' answered ' + response.status + (detail ? ': ' + JSON.stringify(detail) : ''));
      error.status = response.status;
      error.detail = detail;
      throw error;
    }
    return response;
  }

  async function publicKey(options, where) {
    if (options.vapidPublicKey) return options.vapidPublicKey;
    if (!where.key) throw new Error('notifierSubscribe: give baseUrl (the kit) or vapidPublicKey');
    try {
      return (await (await request(options, 'GET', where.key)).json()).public_key;
    } catch (error) {
      // The kit says so when push is off; any other 404 (a wrong baseUrl) is an error worth seeing.
      if (error.status === 404 && /^push is off/.test(String(error.detail || ''))) return null;
      throw error;
    }
  }

  function sameKey(subscription, key) {
    const current = subscription.options && subscription.options.applicationServerKey;
    if (!current) return true; // browser does not expose it: assume unchanged
    const bytes = new Uint8Array(current);
    return bytes.length === key.length && bytes.every((b, i) => b === key[i]);
  }

  function expiring(subscription) {
    const at = subscription.expirationTime;
    return typeof at === 'number' && at - Date.now() < EXPIRY_MARGIN_MS;
  }

  // Call from a user gesture the first time (browsers ignore or penalise prompts on page load; Safari
  // refuses them). Once permission is granted, call it on every panel load: it re-saves the current
  // subscription and replaces one that expired, rotated its key, or is about to expire.
  async function notifierSubscribe(options) {
    options = options || {};
    if (!supported()) return 'unsupported';
    if (Notification.permission === 'denied') return 'denied'; // requestPermission() would not even ask
    const permission = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
    if (permission !== 'granted') return permission;

    const where = urls(options);
    const vapidKey = await publicKey(options, where);
    if (!vapidKey) return 'off';
    // Scope '/': every panel page a notification click may focus. A worker served from below the root
    // needs the response header Service-Worker-Allowed: / (the kit's sw.js sends it).
    await navigator.serviceWorker.register(where.sw, { scope: where.scope });
    const registration = await navigator.serviceWorker.ready;
    const key = urlBase64ToUint8Array(vapidKey);
    let subscription = await registration.pushManager.getSubscription();
    let replaced = null;
    if (subscription && (!sameKey(subscription, key) || expiring(subscription))) {
      // Another VAPID key (subscribe() would fail with InvalidStateError) or expired: start afresh.
      replaced = subscription.endpoint;
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) {
      subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    }
    // toJSON(): {endpoint, expirationTime, keys: {p256dh, auth}}, what the kit (save_subscription) expects.
    await request(options, 'POST', where.save, subscription.toJSON());
    if (replaced && replaced !== subscription.endpoint && where.remove) {
      // The server would drop the dead endpoint at its next push (404/410); tell it now. Best effort.
      request(options, where.removeMethod, where.remove, { endpoint: replaced }).catch(() => undefined);
    }
    return 'subscribed';
  }

  // Unsubscribes this browser, then tells the backend ({endpoint} as JSON). The browser side goes first:
  // if the backend call fails, the push service answers 410 for the dead endpoint and the notifier forgets
  // it anyway. Resolves to true if there was a subscription.
  async function notifierUnsubscribe(options) {
    options = options || {};
    if (!('serviceWorker' in navigator)) return false;
    const registration = await navigator.serviceWorker.getRegistration();
    const subscription = registration && (await registration.pushManager.getSubscription());
    if (!subscription) return false;
    const endpoint = subscription.endpoint;
    await subscription.unsubscribe();
    const where = urls(options);
    await request(options, where.removeMethod, where.remove, { endpoint });
    return true;
  }

  window.notifierSubscribe = notifierSubscribe;
  window.notifierUnsubscribe = notifierUnsubscribe;
})();
