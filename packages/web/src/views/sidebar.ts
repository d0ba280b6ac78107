import { h, icon, replace } from '../dom.ts';
import { dmChannel, NAME, type Route, routeHash } from '../model.ts';
import { avatar } from './avatar.ts';

export interface Room {
  name: string;
  private: boolean;
  creator: string;
  members?: string[];
  createdAt: string;
}

export interface SidebarState {
  rooms: readonly Room[];
  dms: readonly string[];
  route: Route;
  /** Unread messages per channel. */
  unread: ReadonlyMap<string, number>;
  notificationsUnread: number;
  openTasks: number;
}

export interface SidebarOptions {
  me: string;
  createRoom(name: string, isPrivate: boolean, members: string[]): Promise<void>;
  startDm(user: string): void;
}

/** Navigation: notifications, tasks, rooms (with creation) and direct messages. */
export class Sidebar {
  readonly element: HTMLElement;
  private readonly nav: HTMLElement;
  private readonly roomList: HTMLUListElement;
  private readonly dmList: HTMLUListElement;

  constructor(private readonly options: SidebarOptions) {
    this.nav = h('ul', { class: 'nav-list' });
    this.roomList = h('ul', { class: 'nav-list', testid: 'room-list' });
    this.dmList = h('ul', { class: 'nav-list', testid: 'dm-list' });
    const roomForm = this.roomForm();
    const dmForm = this.dmForm();
    this.element = h(
      'nav',
      { class: 'sidebar', testid: 'sidebar', id: 'sidebar', 'aria-label': 'Rooms and conversations' },
      this.nav,
      h(
        'div',
        { class: 'nav-section' },
        h(
          'div',
          { class: 'nav-heading' },
          h('span', {}, 'Rooms'),
          h(
            'button',
            {
              type: 'button',
              class: 'icon-button ghost small',
              testid: 'new-room-button',
              'aria-label': 'New room',
              title: 'New room',
              'aria-controls': 'new-room-form',
              onclick: () => toggle(roomForm),
            },
            icon('plus'),
          ),
        ),
        roomForm,
        this.roomList,
      ),
      h(
        'div',
        { class: 'nav-section' },
        h(
          'div',
          { class: 'nav-heading' },
          h('span', {}, 'Direct messages'),
          h(
            'button',
            {
              type: 'button',
              class: 'icon-button ghost small',
              testid: 'new-dm-button',
              'aria-label': 'New direct message',
              title: 'New direct message',
              onclick: () => toggle(dmForm),
            },
            icon('plus'),
          ),
        ),
        dmForm,
        this.dmList,
      ),
    );
  }

  update(state: SidebarState): void {
    const { route } = state;
    replace(
      this.nav,
      this.link(
        { view: 'notifications' },
        route.view === 'notifications',
        'nav-notifications',
        icon('bell'),
        'Notifications',
        state.notificationsUnread,
        'notifications-badge',
      ),
      this.link(
        { view: 'tasks' },
        route.view === 'tasks',
        'nav-tasks',
        icon('tasks'),
        'Tasks',
        state.openTasks,
        'tasks-count',
        true,
      ),
    );
    if (state.rooms.length === 0) {
      replace(this.roomList, h('li', { class: 'nav-empty' }, 'No rooms yet: create one with +'));
    } else {
      replace(
        this.roomList,
        ...state.rooms.map((room) =>
          this.link(
            { view: 'room', room: room.name },
            route.view === 'room' && route.room === room.name,
            'room-link',
            icon(room.private ? 'lock' : 'hash', room.private ? 'private' : undefined),
            room.name,
            state.unread.get(`room:${room.name}`) ?? 0,
            'unread-badge',
            false,
            { 'data-room': room.name },
          ),
        ),
      );
    }
    if (state.dms.length === 0) {
      replace(this.dmList, h('li', { class: 'nav-empty' }, 'No conversations yet'));
    } else {
      replace(
        this.dmList,
        ...state.dms.map((user) =>
          this.link(
            { view: 'dm', user },
            route.view === 'dm' && route.user === user,
            'dm-link',
            avatar(user, 'small'),
            user,
            state.unread.get(dmChannel(this.options.me, user)) ?? 0,
            'unread-badge',
            false,
            { 'data-user': user },
          ),
        ),
      );
    }
  }

  private link(
    route: Route,
    active: boolean,
    testid: string,
    glyph: Element,
    label: string,
    count: number,
    countTestid: string,
    quietCount = false,
    extra: Record<string, string> = {},
  ): HTMLLIElement {
    return h(
      'li',
      {},
      h(
        'a',
        {
          href: routeHash(route),
          class: `nav-link${active ? ' active' : ''}${count > 0 && !quietCount ? ' has-unread' : ''}`,
          testid,
          'aria-current': active ? 'page' : undefined,
          ...extra,
        },
        glyph,
        h('span', { class: 'nav-label' }, label),
        count > 0
          ? h(
              'span',
              { class: `badge${quietCount ? ' quiet' : ''}`, testid: countTestid },
              count > 99 ? '99+' : String(count),
            )
          : null,
      ),
    );
  }

  private roomForm(): HTMLFormElement {
    const name = h('input', {
      testid: 'new-room-name',
      placeholder: 'room-name',
      'aria-label': 'Room name',
      autocapitalize: 'none',
      spellcheck: 'false',
      maxlength: 64,
    });
    const isPrivate = h('input', { type: 'checkbox', testid: 'new-room-private' });
    const members = h('input', {
      testid: 'new-room-members',
      placeholder: 'members: bob, carol',
      'aria-label': 'Members (comma separated)',
      autocapitalize: 'none',
      spellcheck: 'false',
      hidden: true,
    });
    isPrivate.addEventListener('change', () => {
      members.hidden = !isPrivate.checked;
    });
    const error = h('p', { class: 'form-error', testid: 'new-room-error', role: 'alert' });
    const form: HTMLFormElement = h(
      'form',
      {
        class: 'sidebar-form',
        testid: 'new-room-form',
        id: 'new-room-form',
        hidden: true,
        onsubmit: async (event) => {
          event.preventDefault();
          const room = name.value.trim();
          error.textContent = '';
          if (!NAME.test(room)) {
            error.textContent = 'A room name is 1–64 of letters, digits, _ . -';
            return;
          }
          const list = isPrivate.checked
            ? members.value
                .split(/[\s,]+/)
                .map((m) => m.trim().toLowerCase())
                .filter(Boolean)
            : [];
          const invalid = list.find((m) => !NAME.test(m));
          if (invalid) {
            error.textContent = `“${invalid}” is not a valid username`;
            return;
          }
          try {
            await this.options.createRoom(room, isPrivate.checked, list);
            form.reset();
            members.hidden = true;
            form.hidden = true;
          } catch (failure) {
            error.textContent = failure instanceof Error ? failure.message : String(failure);
          }
        },
      },
      name,
      h('label', { class: 'checkbox-label' }, isPrivate, 'Private'),
      members,
      error,
      h(
        'div',
        { class: 'form-actions' },
        h('button', { type: 'button', class: 'button small ghost', onclick: () => (form.hidden = true) }, 'Cancel'),
        h('button', { type: 'submit', class: 'button small primary', testid: 'new-room-submit' }, 'Create'),
      ),
    );
    return form;
  }

  private dmForm(): HTMLFormElement {
    const user = h('input', {
      testid: 'new-dm-user',
      placeholder: 'username',
      'aria-label': 'Username',
      autocapitalize: 'none',
      spellcheck: 'false',
      maxlength: 64,
    });
    const error = h('p', { class: 'form-error', testid: 'new-dm-error', role: 'alert' });
    const form: HTMLFormElement = h(
      'form',
      {
        class: 'sidebar-form',
        testid: 'new-dm-form',
        hidden: true,
        onsubmit: (event) => {
          event.preventDefault();
          const name = user.value.trim().toLowerCase();
          error.textContent = '';
          if (!NAME.test(name)) {
            error.textContent = 'Not a valid username';
            return;
          }
          if (name === this.options.me) {
            error.textContent = 'That is you';
            return;
          }
          this.options.startDm(name);
          form.reset();
          form.hidden = true;
        },
      },
      user,
      error,
      h(
        'div',
        { class: 'form-actions' },
        h('button', { type: 'button', class: 'button small ghost', onclick: () => (form.hidden = true) }, 'Cancel'),
        h('button', { type: 'submit', class: 'button small primary', testid: 'new-dm-submit' }, 'Start'),
      ),
    );
    return form;
  }
}

function toggle(form: HTMLFormElement): void {
  form.hidden = !form.hidden;
  if (!form.hidden) form.querySelector('input')?.focus();
}
