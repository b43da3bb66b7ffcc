// Passkey buttons (WebAuthn through @simplewebauthn/browser, served from /static/vendor/).
// A button with data-passkey="register" or "login" asks data-options for options, runs the
// browser ceremony and posts the result to data-verify; the server answers { redirect }.
// No inline script (CSP); everything else on the pages works without this file.
'use strict';
(function () {
  const lib = window.SimpleWebAuthnBrowser;
  const csrf = () => (document.querySelector('input[name="_csrf"]') || {}).value || '';
  const post = (url, body) =>
    fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRF-Token': csrf() },
      body: JSON.stringify(body || {}),
    });
  const problem = async (res) => {
    try {
      const p = await res.json();
      return p.detail || p.title || 'That did not work.';
    } catch {
      return 'That did not work.';
    }
  };
  for (const button of document.querySelectorAll('[data-passkey]')) {
    if (!lib || !lib.browserSupportsWebAuthn()) {
      button.hidden = true;
      continue;
    }
    const box = button.closest('section') || document;
    const error = box.querySelector('[data-passkey-error]');
    const show = (text) => {
      if (!error) return;
      error.textContent = text;
      error.hidden = false;
    };
    button.addEventListener('click', async () => {
      button.disabled = true;
      try {
        const register = button.dataset.passkey === 'register';
        const opts = await post(button.dataset.options);
        if (opts.status === 403 || opts.redirected) {
          // Sudo mode ran out: re-authenticate, then come back here.
          window.location.assign('/sudo?next=' + encodeURIComponent(window.location.pathname));
          return;
        }
        if (!opts.ok) return show(await problem(opts));
        const optionsJSON = await opts.json();
        const response = register ? await lib.startRegistration({ optionsJSON }) : await lib.startAuthentication({ optionsJSON });
        const nameInput = box.querySelector('[data-passkey-name]');
        const done = await post(button.dataset.verify, { response, name: nameInput ? nameInput.value : undefined, next: button.dataset.next });
        if (!done.ok) return show(await problem(done));
        const { redirect } = await done.json();
        window.location.assign(redirect || '/');
      } catch (err) {
        show(err && err.name === 'NotAllowedError' ? 'The passkey prompt was cancelled or timed out.' : 'The passkey did not work: ' + ((err && err.message) || err));
      } finally {
        button.disabled = false;
      }
    });
  }
})();
