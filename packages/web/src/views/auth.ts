import { h } from '../dom.ts';
import { USERNAME } from '../model.ts';
import { ApiError, register, Session } from '../session.ts';

/** The sign-in screen; `register` mode creates the account, then signs in with it. */
export function authView(onSignedIn: (session: Session) => void, notice?: string): HTMLElement {
  let mode: 'sign-in' | 'register' = 'sign-in';

  const username = h('input', {
    id: 'auth-username',
    testid: 'auth-username',
    name: 'username',
    autocomplete: 'username',
    autocapitalize: 'none',
    spellcheck: 'false',
    required: true,
    maxlength: 32,
  });
  const password = h('input', {
    id: 'auth-password',
    testid: 'auth-password',
    name: 'password',
    type: 'password',
    autocomplete: 'current-password',
    required: true,
    maxlength: 128,
  });
  const hint = h('p', { class: 'field-hint' });
  const error = h('p', { class: 'form-error', testid: 'auth-error', role: 'alert' });
  const submit = h('button', { type: 'submit', class: 'button primary wide', testid: 'auth-submit' });
  const title = h('h1', { class: 'auth-title' });
  const switchPrompt = h('span');
  const switchButton = h('button', {
    type: 'button',
    class: 'link-button',
    testid: 'auth-switch',
    onclick: () => setMode(mode === 'sign-in' ? 'register' : 'sign-in'),
  });

  function setMode(next: typeof mode): void {
    mode = next;
    title.textContent = mode === 'sign-in' ? 'Sign in to Parley' : 'Create your account';
    submit.textContent = mode === 'sign-in' ? 'Sign in' : 'Create account';
    switchPrompt.textContent = mode === 'sign-in' ? 'New here? ' : 'Already have an account? ';
    switchButton.textContent = mode === 'sign-in' ? 'Create an account' : 'Sign in';
    hint.textContent = mode === 'register' ? '3–32 characters: lowercase letters, digits, _ . -' : '';
    password.setAttribute('autocomplete', mode === 'sign-in' ? 'current-password' : 'new-password');
    password.minLength = mode === 'register' ? 8 : 1;
    error.textContent = '';
  }

  const form = h(
    'form',
    {
      class: 'auth-form',
      testid: 'auth-form',
      novalidate: true,
      onsubmit: async (event) => {
        event.preventDefault();
        const name = username.value.trim().toLowerCase();
        error.textContent = '';
        if (mode === 'register' && !USERNAME.test(name)) {
          error.textContent = 'A username is 3–32 characters: lowercase letters, digits, _ . -';
          return;
        }
        if (mode === 'register' && (password.value.length < 8 || password.value.length > 128)) {
          error.textContent = 'A password is 8–128 characters.';
          return;
        }
        if (!name || !password.value) {
          error.textContent = 'Enter your username and password.';
          return;
        }
        submit.disabled = true;
        try {
          if (mode === 'register') await register(name, password.value);
          onSignedIn(await Session.signIn(name, password.value));
        } catch (failure) {
          error.textContent = explain(failure);
        } finally {
          submit.disabled = false;
        }
      },
    },
    title,
    notice ? h('p', { class: 'form-notice', testid: 'auth-notice' }, notice) : null,
    h('label', { for: 'auth-username' }, 'Username'),
    username,
    hint,
    h('label', { for: 'auth-password' }, 'Password'),
    password,
    error,
    submit,
    h('p', { class: 'auth-switch' }, switchPrompt, switchButton),
  );
  setMode('sign-in');

  return h(
    'main',
    { class: 'auth-screen', testid: 'auth-screen' },
    h(
      'div',
      { class: 'auth-card' },
      h('div', { class: 'brand brand-large' }, h('span', { class: 'brand-mark' }, 'P'), 'Parley'),
      h('p', { class: 'auth-tagline' }, 'Rooms, direct messages and a shared task board, live.'),
      form,
    ),
  );
}

function explain(error: unknown): string {
  if (!(error instanceof ApiError)) return 'Something went wrong. Try again.';
  if (error.code === 'conflict') return 'That username is taken.';
  if (error.code === 'unauthorized') return 'Wrong username or password.';
  // The server's own words for the rest: a rule that was broken, how long a lockout lasts, no connection.
  return error.message;
}
