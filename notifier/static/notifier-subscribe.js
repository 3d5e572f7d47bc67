/* ReplyX notifier: subscribe the admin panel's browser to Web Push.
 *
 *   button.addEventListener('click', () => notifierSubscribe({
 *     vapidPublicKey: '<NOTIFIER VAPID public key, URL-safe base64>',
 *     saveUrl: '/api/notifier/subscription',   // your backend: worker.client.save_subscription(...)
 *   }));
 *
 * Plain ES2017, no imports; exported as window.notifierSubscribe / window.notifierUnsubscribe.
 */
(function () {
  'use strict';

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

  async function postJson(url, body) {
    const response = await fetch(url, {
      method: 'POST',
      credentials: 'same-origin', // the panel's session cookie identifies the manager
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error('notifier: ' + url + ' answered ' + response.status);
    return response;
  }

  // Call ONLY from a user gesture (a click on "Enable notifications"): browsers ignore or penalise
  // permission prompts that appear on page load, and Safari refuses them outright.
  // Safe to call on every panel load once permission is granted: the same subscription is
  // re-saved, which also picks up an endpoint the browser rotated (see notifier-sw.js).
  // Resolves to 'subscribed', 'unsupported', 'denied' or 'default' (prompt dismissed).
  async function notifierSubscribe({ vapidPublicKey, saveUrl, swUrl = '/notifier-sw.js', scope = '/' }) {
    if (!supported()) return 'unsupported';
    const permission = Notification.permission === 'granted' ? 'granted' : await Notification.requestPermission();
    if (permission !== 'granted') return permission;

    // Scope '/': every panel page a notification click may focus. A worker outside the root needs the
    // response header Service-Worker-Allowed: / or register() rejects with SecurityError.
    await navigator.serviceWorker.register(swUrl, { scope });
    const registration = await navigator.serviceWorker.ready;
    const key = urlBase64ToUint8Array(vapidPublicKey);
    let subscription = await registration.pushManager.getSubscription();
    if (subscription && !sameKey(subscription, key)) {
      // Subscribed under another VAPID key (key rotation): subscribe() would fail with InvalidStateError.
      await subscription.unsubscribe();
      subscription = null;
    }
    if (!subscription) {
      subscription = await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: key });
    }
    // toJSON(): {endpoint, expirationTime, keys: {p256dh, auth}}, what save_subscription expects.
    await postJson(saveUrl, subscription.toJSON());
    return 'subscribed';
  }

  function sameKey(subscription, key) {
    const current = subscription.options && subscription.options.applicationServerKey;
    if (!current) return true; // browser does not expose it: assume unchanged
    const bytes = new Uint8Array(current);
    return bytes.length === key.length && bytes.every((b, i) => b === key[i]);
  }

  // Unsubscribes this browser, then tells the backend ({endpoint} as JSON, POST because many
  // frameworks drop DELETE bodies) to call worker.client.delete_subscription(endpoint).
  // The browser side goes first: if the backend call fails, the push service answers 410 for the
  // dead endpoint and the notifier forgets it anyway. Resolves to true if there was a subscription.
  async function notifierUnsubscribe({ deleteUrl }) {
    if (!('serviceWorker' in navigator)) return false;
    const registration = await navigator.serviceWorker.getRegistration();
    const subscription = registration && (await registration.pushManager.getSubscription());
    if (!subscription) return false;
    const endpoint = subscription.endpoint;
    await subscription.unsubscribe();
    await postJson(deleteUrl, { endpoint });
    return true;
  }

  window.notifierSubscribe = notifierSubscribe;
  window.notifierUnsubscribe = notifierUnsubscribe;
})();
