// The sign-in form: the token is checked against the API before it is kept.

import { get, setToken, forgetToken, ApiError } from '../api.js';
import { h } from '../dom.js';

/** Shows the form in `main`; `notice` explains why (e.g. the token was revoked). */
export function showSignIn(main, onSignedIn, notice) {
  const error = h('p', { id: 'signin-error', class: 'signin-error', role: 'alert', hidden: !notice }, notice || '');
  const input = h('input', {
    id: 'signin-token',
    name: 'token',
    type: 'password',
    required: true,
    autocomplete: 'current-password',
    spellcheck: 'false',
    placeholder: 'lf_…',
  });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h(
    'form',
    { id: 'signin', class: 'card signin', method: 'post', novalidate: true },
    h('h1', null, 'Sign in'),
    h('p', { class: 'muted' }, 'Use the admin API token loraflow printed on its first start, or an API key.'),
    h('div', { class: 'field' }, h('label', { for: 'signin-token' }, 'API token'), input),
    error,
    button,
    h(
      'p',
      { class: 'hint' },
      'Lost the admin token? ',
      h('code', null, 'loraflow admin-token rotate'),
      ' prints a new one. The token is kept in this browser tab only.',
    ),
  );
  const fail = (message) => {
    error.textContent = message;
    error.hidden = false;
    input.setAttribute('aria-invalid', 'true');
    input.focus();
  };
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const value = input.value.trim();
    if (!value) return fail('Enter an API token.');
    button.disabled = true;
    setToken(value);
    try {
      // Every key may list applications (a scoped key sees its own).
      await get('/applications?limit=1', { quiet401: true });
      onSignedIn();
    } catch (e) {
      forgetToken();
      if (e instanceof ApiError && e.status === 401) fail('That token was not accepted. Check it and try again.');
      else if (e instanceof ApiError && e.status === 429)
        fail(`Too many wrong tokens from this address; try again in ${e.retryAfter || 60} s.`);
      else fail(e.message || String(e));
    } finally {
      button.disabled = false;
    }
  });
  main.replaceChildren(form);
  input.focus();
}
