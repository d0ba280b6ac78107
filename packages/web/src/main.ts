import './styles.css';
import { App } from './app.ts';
import { Session } from './session.ts';
import { authView } from './views/auth.ts';

const root = document.getElementById('root')!;
let app: App | undefined;

function start(session: Session): void {
  app = new App(session, (notice) => {
    session.signOut();
    app?.destroy();
    app = undefined;
    showSignIn(notice);
  });
  root.replaceChildren(app.element);
  app.start();
}

function showSignIn(notice?: string): void {
  document.title = 'Sign in · Parley';
  root.replaceChildren(authView(start, notice));
  root.querySelector<HTMLInputElement>('[data-testid="auth-username"]')?.focus();
}

const session = Session.restore();
if (session) start(session);
else showSignIn();
