/* ReplyX notifier: what a manager missed while the panel was away, on every (re)connect of its stream.
 *
 *   const missed = notifierMissed({
 *     url: '/api/notifier/missed',                 // the kit's GET /missed
 *     source: eventSource,                         // the panel's own EventSource (or any 'open' emitter)
 *     headers: () => ({ Authorization: 'Bearer ' + localStorage.getItem('token') }),  // or fetch: yourFetch
 *     onMissed: (dialogs, total) => { ... },       // [{dialog_id, unread, first_unread_message_id,
 *   });                                            //   last_message_id, waiting_since}], oldest first
 *   missed.watch(newSource);   // the panel made a new stream (each EventSource is watched once)
 *   missed.refresh();          // e.g. after the manager read a dialog
 *   missed.stop();             // title and favicon back as they were
 *
 * On every 'open' of a watched stream (the first connect and each reconnect) it fetches the list through
 * the host's own fetch function or headers, hands it to onMissed, and shows the total unread count in
 * the page title ("(3) ReplyX") and as a badge on the favicon. Options `title: false` / `favicon: false`
 * turn either off. Plain ES2017, no imports; exported as window.notifierMissed.
 */
(function () {
  'use strict';

  const SIZE = 64;

  function label(total) {
    return total > 99 ? '99+' : String(total);
  }

  function loadImage(href) {
    return new Promise((resolve, reject) => {
      const image = new Image();
      image.crossOrigin = 'anonymous'; // a foreign icon without CORS fails here, not later as a tainted canvas
      image.onload = () => resolve(image);
      image.onerror = () => reject(new Error('icon did not load'));
      image.src = href;
    });
  }

  function drawBadge(context, total) {
    const text = label(total);
    const radius = SIZE * (text.length > 2 ? 0.3 : 0.26);
    const x = SIZE - radius;
    const y = SIZE - radius;
    context.fillStyle = '#e03131';
    context.beginPath();
    context.arc(x, y, radius, 0, 2 * Math.PI);
    context.fill();
    context.fillStyle = '#ffffff';
    context.font = 'bold ' + Math.round(radius * (text.length > 2 ? 0.9 : 1.2)) + 'px sans-serif';
    context.textAlign = 'center';
    context.textBaseline = 'middle';
    context.fillText(text, x, y + 1);
  }

  function notifierMissed(options) {
    if (!options || !options.url) throw new Error('notifierMissed: options.url is required');
    const watched = new Map(); // source -> its 'open' listener
    const state = { dialogs: [], total: 0, sequence: 0, stopped: false };
    const title = { base: document.title, shown: null };
    const icon = { link: null, original: null, type: null, created: false, drawing: Promise.resolve() };

    async function request() {
      const extra = typeof options.headers === 'function' ? await options.headers() : options.headers || {};
      const doFetch = options.fetch || window.fetch.bind(window);
      const response = await doFetch(options.url, { method: 'GET', credentials: 'same-origin', headers: Object.assign({}, extra) });
      if (!response.ok) {
        const error = new Error('notifier: GET ' + options.url + ' answered ' + response.status);
        error.status = response.status;
        throw error;
      }
      return response.json();
    }

    function showTitle() {
      if (options.title === false) return;
      // The panel may have changed the title since (another page): that becomes the base.
      if (document.title !== title.shown) title.base = document.title;
      title.shown = state.total > 0 ? '(' + label(state.total) + ') ' + title.base : title.base;
      document.title = title.shown;
    }

    async function drawIcon(total) {
      if (options.favicon === false) return;
      if (!icon.link) {
        icon.created = false;
        icon.link = document.querySelector('link[rel~="icon"]');
        if (!icon.link) {
          if (!total) return;
          icon.link = document.createElement('link');
          icon.link.rel = 'icon';
          icon.created = true;
          document.head.appendChild(icon.link);
        }
        icon.original = icon.created ? null : icon.link.getAttribute('href'); // as written, to put it back
        icon.type = icon.link.getAttribute('type');
      }
      if (!total) {
        if (icon.created) {
          icon.link.remove();
          icon.link = null;
        } else {
          icon.link.setAttribute('href', icon.original);
          if (icon.type === null) icon.link.removeAttribute('type');
          else icon.link.setAttribute('type', icon.type);
        }
        return;
      }
      const canvas = document.createElement('canvas');
      canvas.width = canvas.height = SIZE;
      const context = canvas.getContext('2d');
      if (icon.original) {
        try {
          context.drawImage(await loadImage(icon.original), 0, 0, SIZE, SIZE);
        } catch (e) {
          // no usable icon: the badge alone
        }
      }
      drawBadge(context, total);
      icon.link.type = 'image/png';
      icon.link.href = canvas.toDataURL('image/png');
    }

    function show() {
      showTitle();
      const total = state.total;
      // One drawing at a time, in order: the last refresh's count is the one left on the icon.
      icon.drawing = icon.drawing.then(() => (state.stopped ? undefined : drawIcon(total))).catch(report);
      return icon.drawing;
    }

    function report(error) {
      if (options.onError) options.onError(error);
      else console.warn(error);
    }

    async function refresh() {
      const sequence = ++state.sequence;
      const dialogs = await request();
      if (sequence !== state.sequence || state.stopped) return state.dialogs; // a newer refresh answers
      state.dialogs = Array.isArray(dialogs) ? dialogs : [];
      state.total = state.dialogs.reduce((sum, d) => sum + (Number(d.unread) || 0), 0);
      await show();
      if (options.onMissed) options.onMissed(state.dialogs, state.total);
      return state.dialogs;
    }

    function watch(source) {
      if (!source || watched.has(source)) return;
      const onOpen = () => {
        refresh().catch(report);
      };
      source.addEventListener('open', onOpen);
      watched.set(source, onOpen);
      if (source.readyState === 1) onOpen(); // already open: its first 'open' event has passed
    }

    function unwatch(source) {
      const onOpen = watched.get(source);
      if (onOpen) source.removeEventListener('open', onOpen);
      watched.delete(source);
    }

    function stop() {
      state.stopped = true;
      Array.from(watched.keys()).forEach(unwatch);
      if (options.title !== false && document.title === title.shown) document.title = title.base;
      state.total = 0;
      return icon.drawing.then(() => drawIcon(0)).catch(report);
    }

    if (options.source) watch(options.source);
    return {
      watch,
      unwatch,
      refresh,
      stop,
      get total() {
        return state.total;
      },
      get dialogs() {
        return state.dialogs.slice();
      },
    };
  }

  window.notifierMissed = notifierMissed;
})();
