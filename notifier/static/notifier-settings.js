/* ReplyX notifier: a manager's notification settings, rendered into an element of the admin panel.
 *
 *   notifierSettings({
 *     element: document.getElementById('notification-settings'),
 *     baseUrl: '/api/notifier',                 // where the FastAPI kit is mounted
 *     headers: () => ({ Authorization: 'Bearer ' + localStorage.getItem('token') }),
 *     // or: fetch: (url, init) => yourAuthenticatedFetch(url, init)
 *     language: 'ru',                           // 'ru' or 'en' (default: the page's <html lang>)
 *   });
 *
 * It shows and edits, through the kit's GET/PUT /preferences: email on or off, the language of what is
 * sent, quiet hours and the time zone they are in, muted dialogs; and push for this browser (subscribe or
 * unsubscribe, through notifier-subscribe.js, which must be loaded first). Framework-free, no build step;
 * every text is set with textContent, nothing from the server is parsed as HTML. Resolves to an object
 * with reload() once rendered. Exported as window.notifierSettings.
 */
(function () {
  'use strict';

  const TEXTS = {
    ru: {
      title: 'Уведомления',
      push: 'Push-уведомления в этом браузере',
      pushOn: 'Включены', pushOff: 'Выключены', pushDenied: 'Запрещены в настройках браузера',
      pushUnsupported: 'Этот браузер их не поддерживает', pushServerOff: 'Отключены на сервере',
      enable: 'Включить', disable: 'Выключить',
      pushAll: 'Push-уведомления (во всех браузерах)',
      email: 'Письма на почту, если сообщение не прочитано',
      language: 'Язык уведомлений', languageDefault: 'Как у всех', ru: 'Русский', en: 'English',
      quiet: 'Тихие часы: не беспокоить', from: 'с', to: 'до', zone: 'Часовой пояс',
      quietNote: 'Уведомления, пришедшие в тихие часы, придут утром, если сообщение ещё не прочитано.',
      muted: 'Диалоги без уведомлений', mutedNone: 'Нет', unmute: 'Вернуть', mute: 'Добавить',
      dialogId: 'Номер диалога', dialog: 'Диалог №',
      save: 'Сохранить', saved: 'Сохранено', failed: 'Не удалось сохранить: ', loadFailed: 'Не удалось загрузить настройки: ',
    },
    en: {
      title: 'Notifications',
      push: 'Push notifications in this browser',
      pushOn: 'On', pushOff: 'Off', pushDenied: 'Blocked in the browser settings',
      pushUnsupported: 'Not supported by this browser', pushServerOff: 'Turned off on the server',
      enable: 'Turn on', disable: 'Turn off',
      pushAll: 'Push notifications (in every browser)',
      email: 'Emails when a message stays unread',
      language: 'Language of notifications', languageDefault: 'Default', ru: 'Русский', en: 'English',
      quiet: 'Quiet hours: do not disturb', from: 'from', to: 'to', zone: 'Time zone',
      quietNote: 'Notifications due during quiet hours arrive when they end, if the message is still unread.',
      muted: 'Muted dialogs', mutedNone: 'None', unmute: 'Unmute', mute: 'Add',
      dialogId: 'Dialog number', dialog: 'Dialog #',
      save: 'Save', saved: 'Saved', failed: 'Could not save: ', loadFailed: 'Could not load the settings: ',
    },
  };

  const STYLE = [
    '.ntf{font:14px/1.45 -apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,Arial,sans-serif;color:#1f2430;max-width:560px}',
    '.ntf h2{font-size:18px;margin:0 0 16px}',
    '.ntf section{border:1px solid #e3e6ee;border-radius:12px;padding:14px 16px;margin:0 0 12px;background:#fff}',
    '.ntf .row{display:flex;align-items:center;justify-content:space-between;gap:12px;margin:6px 0}',
    '.ntf .muted-text{color:#6b7280;font-size:13px}',
    '.ntf button{font:inherit;border:1px solid #4f46e5;background:#4f46e5;color:#fff;border-radius:8px;padding:6px 14px;cursor:pointer}',
    '.ntf button.plain{background:#fff;color:#4f46e5}',
    '.ntf button:disabled{opacity:.5;cursor:default}',
    '.ntf input[type=text],.ntf select,.ntf input[type=number]{font:inherit;padding:4px 6px;border:1px solid #cfd4e0;border-radius:6px}',
    '.ntf input[name^=quiet_]{width:4.5em;text-align:center}',
    '.ntf ul{list-style:none;margin:6px 0;padding:0}',
    '.ntf li{display:flex;justify-content:space-between;align-items:center;padding:4px 0}',
    '.ntf .status{margin-left:12px}',
    '.ntf .error{color:#b42318}',
  ].join('\n');

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([key, value]) => {
      if (key === 'text') node.textContent = value;
      else if (key === 'on') Object.entries(value).forEach(([event, fn]) => node.addEventListener(event, fn));
      else if (value === true) node.setAttribute(key, '');
      else if (value !== false && value !== null && value !== undefined) node.setAttribute(key, String(value));
    });
    (children || []).forEach((child) => node.appendChild(typeof child === 'string' ? document.createTextNode(child) : child));
    return node;
  }

  async function request(options, method, path, body) {
    const extra = typeof options.headers === 'function' ? await options.headers() : options.headers || {};
    const headers = Object.assign(body === undefined ? {} : { 'Content-Type': 'application/json' }, extra);
    const init = { method, credentials: 'same-origin', headers };
    if (body !== undefined) init.body = JSON.stringify(body);
    const response = await (options.fetch || window.fetch.bind(window))(options.baseUrl.replace(/\/+$/, '') + path, init);
    if (!response.ok) {
      let detail = '';
      try {
        const parsed = (await response.json()).detail;
        detail = typeof parsed === 'string' ? parsed : JSON.stringify(parsed);
      } catch (e) {
        detail = String(response.status);
      }
      throw new Error(detail || String(response.status));
    }
    return response.status === 204 ? null : response.json();
  }

  function timeZones(current) {
    let zones = [];
    try {
      zones = Intl.supportedValuesOf('timeZone');
    } catch (e) {
      zones = [];
    }
    const browser = Intl.DateTimeFormat().resolvedOptions().timeZone;
    return Array.from(new Set([current, browser, 'Europe/Moscow'].concat(zones).filter(Boolean))).sort();
  }

  async function pushState(options) {
    if (!('serviceWorker' in navigator) || !('PushManager' in window) || !window.isSecureContext) return 'unsupported';
    if (Notification.permission === 'denied') return 'denied';
    const registration = await navigator.serviceWorker.getRegistration(options.scope || '/');
    const subscription = registration && (await registration.pushManager.getSubscription());
    return subscription ? 'on' : 'off';
  }

  async function notifierSettings(options) {
    const root = options.element;
    const lang = (options.language || document.documentElement.lang || 'ru').slice(0, 2) === 'en' ? 'en' : 'ru';
    const t = TEXTS[lang];
    let prefs = null;

    async function render() {
      root.textContent = '';
      root.appendChild(el('style', { text: STYLE }));
      const box = el('div', { class: 'ntf', lang });
      root.appendChild(box);
      box.appendChild(el('h2', { text: t.title }));
      try {
        prefs = await request(options, 'GET', '/preferences');
      } catch (error) {
        box.appendChild(el('p', { class: 'error', role: 'alert', text: t.loadFailed + error.message }));
        return;
      }
      const draft = JSON.parse(JSON.stringify(prefs));
      box.appendChild(await pushSection());
      box.appendChild(channelSection(draft));
      box.appendChild(quietSection(draft));
      box.appendChild(mutedSection(draft));
      const status = el('span', { class: 'status', role: 'status' });
      const save = el('button', { type: 'button', 'data-ntf': 'save', text: t.save });
      save.addEventListener('click', async () => {
        save.disabled = true;
        status.className = 'status';
        status.textContent = '';
        try {
          prefs = await request(options, 'PUT', '/preferences', draft);
          status.textContent = t.saved;
        } catch (error) {
          status.className = 'status error';
          status.textContent = t.failed + error.message;
        } finally {
          save.disabled = false;
        }
      });
      box.appendChild(el('div', {}, [save, status]));
    }

    async function pushSection() {
      const state = await pushState(options);
      const label = { on: t.pushOn, off: t.pushOff, denied: t.pushDenied, unsupported: t.pushUnsupported }[state];
      const button = el('button', { type: 'button', class: 'plain', 'data-ntf': 'push-toggle', text: state === 'on' ? t.disable : t.enable });
      button.disabled = state === 'denied' || state === 'unsupported' || !window.notifierSubscribe;
      const note = el('span', { class: 'muted-text', 'data-ntf': 'push-state', text: label });
      button.addEventListener('click', async () => {
        button.disabled = true;
        try {
          if (state === 'on') await window.notifierUnsubscribe(options);
          else {
            const result = await window.notifierSubscribe(options);
            if (result === 'off') note.textContent = t.pushServerOff;
          }
        } finally {
          const fresh = await pushSection();
          section.replaceWith(fresh);
        }
      });
      const section = el('section', { 'data-ntf': 'push' }, [el('div', { class: 'row' }, [el('div', {}, [el('div', { text: t.push }), note]), button])]);
      return section;
    }

    function checkbox(name, checked, label, onChange) {
      const input = el('input', { type: 'checkbox', name, checked: !!checked });
      input.addEventListener('change', () => onChange(input.checked));
      return el('label', { class: 'row' }, [el('span', { text: label }), input]);
    }

    function channelSection(draft) {
      const language = el('select', { name: 'language' }, [
        el('option', { value: '', text: t.languageDefault }),
        el('option', { value: 'ru', text: t.ru }),
        el('option', { value: 'en', text: t.en }),
      ]);
      language.value = draft.language || '';
      language.addEventListener('change', () => { draft.language = language.value || null; });
      return el('section', { 'data-ntf': 'channels' }, [
        checkbox('push', draft.push !== false, t.pushAll, (on) => { draft.push = on; }),
        checkbox('email', draft.email !== false, t.email, (on) => { draft.email = on; }),
        el('label', { class: 'row' }, [el('span', { text: t.language }), language]),
      ]);
    }

    function quietSection(draft) {
      const quiet = draft.quiet_hours || { start: '22:00', end: '08:00' };
      // Plain HH:MM text, not <input type=time>: that one follows the browser's locale (10:30 PM).
      const time = (name, value) => el('input', {
        type: 'text', name, value, inputmode: 'numeric', maxlength: '5', size: '5', placeholder: 'HH:MM',
        pattern: '([01][0-9]|2[0-3]):[0-5][0-9]', autocomplete: 'off',
      });
      const start = time('quiet_start', quiet.start);
      const end = time('quiet_end', quiet.end);
      const zone = el('select', { name: 'time_zone' }, timeZones(draft.time_zone).map((z) => el('option', { value: z, text: z })));
      zone.value = draft.time_zone || Intl.DateTimeFormat().resolvedOptions().timeZone || 'Europe/Moscow';
      const sync = () => {
        draft.quiet_hours = enabled.checked ? { start: start.value, end: end.value } : null;
        draft.time_zone = zone.value || null;
        [start, end].forEach((input) => { input.disabled = !enabled.checked; });
      };
      const enabled = el('input', { type: 'checkbox', name: 'quiet', checked: !!draft.quiet_hours });
      [enabled, start, end, zone].forEach((input) => input.addEventListener('change', sync));
      sync(); // what the form shows is what is saved, the zone included
      return el('section', { 'data-ntf': 'quiet' }, [
        el('label', { class: 'row' }, [el('span', { text: t.quiet }), enabled]),
        el('div', { class: 'row' }, [el('span', {}, [t.from + ' ', start, ' ' + t.to + ' ', end])]),
        el('label', { class: 'row' }, [el('span', { text: t.zone }), zone]),
        el('div', { class: 'muted-text', text: t.quietNote }),
      ]);
    }

    function mutedSection(draft) {
      const list = el('ul', { 'data-ntf': 'muted-list' });
      const draw = () => {
        list.textContent = '';
        if (!draft.muted_dialogs.length) list.appendChild(el('li', { class: 'muted-text', text: t.mutedNone }));
        draft.muted_dialogs.forEach((id) => {
          const unmute = el('button', { type: 'button', class: 'plain', text: t.unmute });
          unmute.addEventListener('click', () => { draft.muted_dialogs = draft.muted_dialogs.filter((x) => x !== id); draw(); });
          list.appendChild(el('li', {}, [el('span', { text: t.dialog + id }), unmute]));
        });
      };
      const input = el('input', { type: 'number', min: '1', step: '1', name: 'mute_dialog', placeholder: t.dialogId });
      const add = el('button', { type: 'button', class: 'plain', text: t.mute });
      add.addEventListener('click', () => {
        const id = Number(input.value);
        if (Number.isInteger(id) && id > 0 && !draft.muted_dialogs.includes(id)) draft.muted_dialogs.push(id);
        input.value = '';
        draw();
      });
      draw();
      return el('section', { 'data-ntf': 'muted' }, [el('div', { text: t.muted }), list, el('div', { class: 'row' }, [input, add])]);
    }

    await render();
    return { reload: render };
  }

  window.notifierSettings = notifierSettings;
})();
