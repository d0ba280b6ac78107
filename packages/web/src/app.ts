import { type ConnectionState, ParleyClient, ParleyError } from '@parley/client';
import { h, icon, replace } from './dom.ts';
import {
  applyTaskEvent,
  type ChatMessage,
  dmChannel,
  dmStartedBy,
  isTaskEvent,
  mergeMessages,
  NAME,
  parseRoute,
  type Route,
  roomAddedTo,
  routeHash,
  type Task,
  type TaskEvent,
  TypingThrottle,
} from './model.ts';
import { ApiError, type Session } from './session.ts';
import { ConversationView } from './views/conversation.ts';
import { NotificationsView } from './views/notifications.ts';
import { type Room, Sidebar } from './views/sidebar.ts';
import { TasksView } from './views/tasks.ts';

const TASKS_CHANNEL = 'topic:tasks';
const HISTORY_PAGE = 50;
/** How long "… is typing" stays up after the last typing notice (the sender repeats it every 2 s). */
const TYPING_SHOWN_MS = 3000;
/** A channel nobody is looking at keeps at most this many messages; older ones are fetched again when needed. */
const BACKGROUND_KEEP = 200;
const MAX_NOTIFICATIONS = 100;
/** How far back `user:<me>` is read at start, for notifications and the `dm.started` of DMs this browser does not know. */
const USER_HISTORY = 100;
/** The room list is fetched again on focus, at most this often. */
const ROOMS_REFETCH_MS = 5000;
/**
 * Rooms in the list are subscribed in the background (for unread counts and
 * so others see you online there), up to this many; the server allows 1000
 * subscriptions a connection. A room past it is subscribed when opened.
 */
const MAX_FOLLOWED_ROOMS = 200;
/** At most one token renewal per this long after the server refuses the socket's credentials. */
const AUTH_RETRY_MS = 30_000;

/** What the app knows of one room or DM. */
interface ChannelState {
  messages: ChatMessage[];
  /** A history page has been loaded since the last reset: the list reaches back to where `hasMore` says. */
  loaded: boolean;
  hasMore: boolean;
  loading: Promise<void> | undefined;
  unread: number;
  /** Who is online; undefined until fetched on the current connection. */
  presence: Set<string> | undefined;
  /** user → when their typing notice runs out. */
  typing: Map<string, number>;
}

const STATE_LABELS: Record<ConnectionState, [label: string, kind: 'online' | 'reconnecting' | 'offline']> = {
  idle: ['Connecting…', 'reconnecting'],
  connecting: ['Connecting…', 'reconnecting'],
  open: ['Online', 'online'],
  reconnecting: ['Reconnecting…', 'reconnecting'],
  offline: ['Offline', 'offline'],
  closed: ['Offline', 'offline'],
};

/** The signed-in app: layout, connection, routing, and the state every view draws from. */
export class App {
  readonly element: HTMLElement;
  private readonly client: ParleyClient;
  private readonly me: string;
  private readonly sidebar: Sidebar;
  private readonly main: HTMLElement;
  private readonly connection: HTMLElement;
  private readonly toast: HTMLElement;
  private readonly menuButton: HTMLButtonElement;

  private rooms: Room[] = [];
  private roomsFetchedAt = 0;
  private dms: string[];
  private readonly channels = new Map<string, ChannelState>();
  private readonly subscriptions = new Map<string, Promise<void>>();
  private readonly throttles = new Map<string, TypingThrottle>();

  private tasks: Task[] = [];
  private readonly deletedTasks = new Set<string>();
  /** Events that came while GET /tasks was on its way, applied again on top of its answer. */
  private taskBuffer: TaskEvent[] | undefined;
  private taskLoads = 0;

  private notifications: ChatMessage[] = [];
  private notificationsUnread = 0;

  private route: Route = { view: 'home' };
  private title = 'Parley';
  private view: ConversationView | TasksView | NotificationsView | undefined;
  private activeChannel: string | undefined;
  private connectionState: ConnectionState = 'idle';
  private everOpen = false;
  private authRecoveredAt = 0;
  /** Opens the current conversation again once connected, when that failed for want of a connection. */
  private retryActive: (() => void) | undefined;
  private toastTimer: ReturnType<typeof setTimeout> | undefined;
  private readonly cleanups: Array<() => void> = [];

  constructor(
    private readonly session: Session,
    private readonly signOut: (notice?: string) => void,
  ) {
    this.me = session.user;
    this.dms = loadDms(this.me);
    this.client = new ParleyClient({
      url: `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/ws`,
      token: () => session.accessToken(),
    });
    this.sidebar = new Sidebar({
      me: this.me,
      createRoom: (name, isPrivate, members) => this.createRoom(name, isPrivate, members),
      startDm: (user) => this.navigate({ view: 'dm', user }),
    });
    this.main = h('main', { class: 'main', testid: 'main', id: 'main' });
    this.connection = h('span', { class: 'connection', testid: 'connection-state', role: 'status' });
    this.toast = h('div', { class: 'toast', testid: 'toast', role: 'alert', hidden: true });
    this.menuButton = h(
      'button',
      {
        type: 'button',
        class: 'icon-button ghost menu-button',
        testid: 'menu-button',
        'aria-label': 'Menu',
        'aria-controls': 'sidebar',
        'aria-expanded': 'false',
        onclick: () => this.setNavOpen(!this.element.classList.contains('nav-open')),
      },
      icon('menu'),
    );
    this.element = h(
      'div',
      { class: 'app', testid: 'app' },
      h(
        'header',
        { class: 'topbar' },
        this.menuButton,
        h(
          'div',
          { class: 'brand' },
          h('span', { class: 'brand-mark' }, 'P'),
          h('span', { class: 'brand-name' }, 'Parley'),
        ),
        h('div', { class: 'topbar-spacer' }),
        this.connection,
        h('span', { class: 'current-user', testid: 'current-user', title: `Signed in as ${this.me}` }, this.me),
        h(
          'button',
          {
            type: 'button',
            class: 'icon-button ghost',
            testid: 'sign-out',
            'aria-label': 'Sign out',
            title: 'Sign out',
            onclick: () => this.signOut(),
          },
          icon('logout'),
        ),
      ),
      h(
        'div',
        { class: 'layout' },
        this.sidebar.element,
        h('div', { class: 'backdrop', testid: 'nav-backdrop', onclick: () => this.setNavOpen(false) }),
        this.main,
      ),
      this.toast,
    );
    session.onExpired(() => this.signOut('Your session has expired. Please sign in again.'));
  }

  start(): void {
    const { client } = this;
    this.cleanups.push(
      client.on('state', (state) => this.onState(state)),
      client.on('message', (message) => this.onMessage(message)),
      client.on('join', ({ channel, user }) => this.onPresence(channel, user, true)),
      client.on('leave', ({ channel, user }) => this.onPresence(channel, user, false)),
      client.on('typing', ({ channel, user }) => this.onTyping(channel, user)),
      client.on('recovery-failed', ({ channel }) => this.onRecoveryFailed(channel)),
      client.on('error', (error) => {
        if (error.code === 'unauthorized') {
          if (client.state === 'offline') this.recoverAuth();
        } else if (error.code !== 'disconnected' && error.code !== 'timeout') {
          this.showToast(error.message);
        }
      }),
      listen(window, 'hashchange', () => this.onRoute()),
      listen(window, 'focus', () => this.refreshRooms()),
      listen(document, 'visibilitychange', () => {
        if (document.visibilityState === 'visible') this.markActiveRead();
      }),
      listen(window, 'online', () => this.renderConnection()),
      listen(window, 'offline', () => this.renderConnection()),
      listen(document, 'keydown', (event) => {
        if ((event as KeyboardEvent).key === 'Escape') this.setNavOpen(false);
      }),
    );
    this.renderConnection();
    this.renderSidebar();
    client.connect();
    this.ensureSubscriptions();
    // Straight away over HTTP, so the board does not wait for the socket.
    void this.loadTasks();
    this.refreshRooms(true).finally(() => this.onRoute());
  }

  /**
   * Subscribes to every channel the app follows that is not subscribed yet:
   * at start, and again once connected, for any whose subscribe failed while
   * the connection was down (the SDK keeps the ones that succeeded).
   */
  private ensureSubscriptions(): void {
    const followed: Array<[string, () => unknown]> = [
      // Loaded again once subscribed: a change made between the first load and the subscription would be missed.
      [TASKS_CHANNEL, () => Promise.all([this.loadTasks(), this.loadNotifications(TASKS_CHANNEL)])],
      [`user:${this.me}`, () => void this.loadNotifications(`user:${this.me}`)],
    ];
    for (const user of this.dms) followed.push([dmChannel(this.me, user), () => undefined]);
    for (const room of this.rooms.slice(0, MAX_FOLLOWED_ROOMS)) followed.push([`room:${room.name}`, () => undefined]);
    for (const [channel, then] of followed) {
      if (!this.subscriptions.has(channel)) this.subscribe(channel).then(then, () => undefined);
    }
  }

  destroy(): void {
    for (const cleanup of this.cleanups) cleanup();
    this.client.close();
    clearTimeout(this.toastTimer);
    for (const state of this.channels.values()) state.typing.clear();
    this.element.remove();
  }

  // ── connection ───────────────────────────────────────────────────────────

  private onState(state: ConnectionState): void {
    const reconnected = state === 'open' && this.everOpen && this.connectionState !== 'open';
    this.connectionState = state;
    if (state === 'open') this.everOpen = true;
    if (state !== 'open') {
      // Nobody's typing notice can be trusted across a gap, nor can the presence we knew.
      for (const channel of this.channels.values()) {
        channel.typing.clear();
        channel.presence = undefined;
      }
      this.renderActivePresence();
      this.renderActiveTyping();
    }
    if (state === 'open') {
      this.ensureSubscriptions();
      const retry = this.retryActive;
      this.retryActive = undefined;
      retry?.();
    }
    if (reconnected) {
      void this.refreshRooms(true);
      if (this.activeChannel) void this.loadPresence(this.activeChannel);
    }
    this.renderConnection();
  }

  /**
   * The server refused the socket's token (a stale tab, a rotated key): a
   * fresh token usually settles it. A second refusal soon after is not
   * retried in a loop; a refresh the server refuses ends the session.
   */
  private recoverAuth(): void {
    if (Date.now() - this.authRecoveredAt < AUTH_RETRY_MS) {
      this.showToast('The server refused your credentials. Sign out and in again.');
      return;
    }
    this.authRecoveredAt = Date.now();
    this.session.refresh().then(
      () => this.client.connect(),
      () => undefined,
    );
  }

  private renderConnection(): void {
    const offlineBrowser = typeof navigator !== 'undefined' && navigator.onLine === false;
    const [label, kind] =
      offlineBrowser && this.connectionState !== 'open' ? STATE_LABELS.offline : STATE_LABELS[this.connectionState];
    this.connection.dataset.state = kind;
    this.connection.title = `Connection: ${this.connectionState}`;
    replace(
      this.connection,
      h('span', { class: 'connection-dot' }),
      h('span', { class: 'connection-label' }, label),
      this.connectionState === 'offline' || this.connectionState === 'closed'
        ? h(
            'button',
            { type: 'button', class: 'link-button', testid: 'reconnect', onclick: () => this.client.connect() },
            'Retry',
          )
        : null,
    );
  }

  // ── channels ─────────────────────────────────────────────────────────────

  private state(channel: string): ChannelState {
    let state = this.channels.get(channel);
    if (!state) {
      state = {
        messages: [],
        loaded: false,
        hasMore: false,
        loading: undefined,
        unread: 0,
        presence: undefined,
        typing: new Map(),
      };
      this.channels.set(channel, state);
    }
    return state;
  }

  /** Subscribes once per channel; the SDK keeps the subscription across reconnects. */
  private subscribe(channel: string): Promise<void> {
    let subscription = this.subscriptions.get(channel);
    if (!subscription) {
      subscription = this.client.subscribe(channel).then(
        () => undefined,
        (error: unknown) => {
          this.subscriptions.delete(channel);
          throw error;
        },
      );
      // Callers that do not wait still must not leave an unhandled rejection behind.
      subscription.catch(() => undefined);
      this.subscriptions.set(channel, subscription);
    }
    return subscription;
  }

  private onMessage(message: ChatMessage): void {
    const { channel } = message;
    if (channel === TASKS_CHANNEL) {
      if (isTaskEvent(message.data)) this.onTaskEvent(message.data);
      this.addNotifications([message], true);
      return;
    }
    if (channel === `user:${this.me}`) {
      this.addNotifications([message], true);
      this.discoverDms([message], true);
      // Added to a private room: list it now, not at the next focus or reload; and if it is the
      // room on screen (refused until now), open it.
      const added = roomAddedTo(message, this.me);
      if (added !== undefined) {
        void this.refreshRooms(true).then(() => {
          if (this.route.view === 'room' && this.route.room === added) this.onRoute();
        });
      }
      return;
    }
    const state = this.state(channel);
    state.messages = mergeMessages(state.messages, [message]);
    state.typing.delete(message.from);
    const active = channel === this.activeChannel;
    if (!active && state.messages.length > BACKGROUND_KEEP) {
      state.messages = state.messages.slice(-BACKGROUND_KEEP);
      state.hasMore = true;
    }
    if (message.from !== this.me && (!active || document.visibilityState !== 'visible')) {
      state.unread++;
      this.renderSidebar();
    }
    if (active && this.view instanceof ConversationView && state.loaded) {
      this.view.setMessages(state.messages, state.hasMore);
      this.renderActiveTyping();
    }
  }

  private onRecoveryFailed(channel: string): void {
    if (channel === TASKS_CHANNEL) {
      void this.loadTasks();
      void this.loadNotifications(channel);
      return;
    }
    if (channel === `user:${this.me}`) {
      void this.loadNotifications(channel);
      return;
    }
    // Some messages are gone for good from this client's point of view: start the list again from history.
    const state = this.state(channel);
    state.messages = [];
    state.loaded = false;
    state.hasMore = false;
    if (channel === this.activeChannel) void this.loadLatest(channel);
  }

  private async loadLatest(channel: string): Promise<void> {
    const state = this.state(channel);
    state.loading ??= (async () => {
      try {
        const page = await this.client.history(channel, { limit: HISTORY_PAGE });
        state.messages = mergeMessages(state.messages, page.messages);
        // Live messages may already reach further back than this page; only an empty list takes the page's word.
        state.hasMore = page.hasMore;
        state.loaded = true;
      } finally {
        state.loading = undefined;
      }
    })();
    await state.loading;
    if (channel === this.activeChannel && this.view instanceof ConversationView) {
      this.view.setMessages(state.messages, state.hasMore);
    }
  }

  private async loadOlder(channel: string): Promise<void> {
    const state = this.state(channel);
    const first = state.messages[0];
    if (!first || !state.hasMore) return;
    const page = await this.client.history(channel, { before: first.offset, limit: HISTORY_PAGE });
    state.messages = mergeMessages(page.messages, state.messages);
    state.hasMore = page.hasMore;
    if (channel === this.activeChannel && this.view instanceof ConversationView) {
      this.view.setMessages(state.messages, state.hasMore);
    }
  }

  private async loadPresence(channel: string): Promise<void> {
    const state = this.state(channel);
    try {
      const users = await this.client.presence(channel);
      state.presence = new Set(users.map((entry) => entry.user));
    } catch {
      state.presence = undefined;
    }
    if (channel === this.activeChannel) this.renderActivePresence();
  }

  private onPresence(channel: string, user: string, joined: boolean): void {
    const state = this.channels.get(channel);
    if (!state?.presence) return;
    if (joined) state.presence.add(user);
    else {
      state.presence.delete(user);
      state.typing.delete(user);
    }
    if (channel === this.activeChannel) {
      this.renderActivePresence();
      this.renderActiveTyping();
    }
  }

  private onTyping(channel: string, user: string): void {
    if (user === this.me) return;
    const state = this.state(channel);
    state.typing.set(user, Date.now() + TYPING_SHOWN_MS);
    if (channel === this.activeChannel) {
      this.renderActiveTyping();
      // A little after the notice runs out, so the check below sees it expired.
      setTimeout(() => this.renderActiveTyping(), TYPING_SHOWN_MS + 50);
    }
  }

  private renderActiveTyping(): void {
    if (!this.activeChannel || !(this.view instanceof ConversationView)) return;
    const state = this.state(this.activeChannel);
    const now = Date.now();
    for (const [user, until] of state.typing) if (until <= now) state.typing.delete(user);
    this.view.setTyping([...state.typing.keys()].sort());
  }

  private renderActivePresence(): void {
    if (!this.activeChannel || !(this.view instanceof ConversationView)) return;
    const presence = this.state(this.activeChannel).presence;
    this.view.setPresence(presence ? [...presence] : undefined);
  }

  private sendTyping(channel: string): void {
    let throttle = this.throttles.get(channel);
    if (!throttle) {
      throttle = new TypingThrottle(2000);
      this.throttles.set(channel, throttle);
    }
    if (throttle.shouldSend(Date.now())) this.client.typing(channel);
  }

  private async send(channel: string, text: string, idempotencyKey: string): Promise<void> {
    this.throttles.get(channel)?.reset();
    try {
      await this.client.publish(channel, { text }, { idempotencyKey });
    } catch (error) {
      throw new Error(describe(error));
    }
  }

  private markActiveRead(): void {
    if (!this.activeChannel) {
      if (this.route.view === 'notifications' && this.notificationsUnread > 0) {
        this.notificationsUnread = 0;
        this.renderSidebar();
      }
      return;
    }
    const state = this.state(this.activeChannel);
    if (state.unread > 0) {
      state.unread = 0;
      this.renderSidebar();
    }
  }

  // ── rooms and DMs ────────────────────────────────────────────────────────

  private async refreshRooms(force = false): Promise<void> {
    if (!force && Date.now() - this.roomsFetchedAt < ROOMS_REFETCH_MS) return;
    this.roomsFetchedAt = Date.now();
    try {
      const { rooms } = await this.session.request<{ rooms: Room[] }>('GET', '/rooms');
      this.rooms = rooms.sort((a, b) => (a.name < b.name ? -1 : 1));
      this.ensureSubscriptions();
      this.renderSidebar();
    } catch (error) {
      this.showToast(`Could not load rooms: ${describe(error)}`);
    }
  }

  private async createRoom(name: string, isPrivate: boolean, members: string[]): Promise<void> {
    try {
      const room = await this.session.request<Room>('POST', '/rooms', {
        name,
        private: isPrivate,
        ...(isPrivate ? { members } : {}),
      });
      this.rooms = [...this.rooms.filter((r) => r.name !== room.name), room].sort((a, b) => (a.name < b.name ? -1 : 1));
      void this.subscribe(`room:${room.name}`);
      this.renderSidebar();
      this.navigate({ view: 'room', room: room.name });
    } catch (error) {
      if (error instanceof ApiError && error.code === 'conflict') {
        await this.refreshRooms(true);
        if (this.rooms.some((r) => r.name === name)) {
          this.navigate({ view: 'room', room: name });
          return;
        }
        throw new Error(`A private room named “${name}” already exists.`);
      }
      throw new Error(describe(error));
    }
  }

  private async addMember(roomName: string, username: string): Promise<void> {
    try {
      const room = await this.session.request<Room>('POST', `/rooms/${encodeURIComponent(roomName)}/members`, {
        username,
      });
      this.rooms = this.rooms.map((r) => (r.name === room.name ? room : r));
    } catch (error) {
      throw new Error(describe(error));
    }
  }

  private rememberDm(user: string): void {
    if (this.dms.includes(user)) return;
    this.dms = [...this.dms, user].sort();
    saveDms(this.me, this.dms);
    this.renderSidebar();
  }

  /**
   * DMs someone else started: the server tells `user:<me>` with the first
   * message (`dm.started`). Live, the DM shows in the sidebar with that
   * message unread and is subscribed for the next ones; from history (a
   * fresh browser) it is simply listed.
   */
  private discoverDms(messages: readonly ChatMessage[], live: boolean): void {
    for (const message of messages) {
      const partner = dmStartedBy(message, this.me);
      if (partner === undefined || this.dms.includes(partner)) continue;
      const channel = dmChannel(this.me, partner);
      if (live && channel !== this.activeChannel) this.state(channel).unread++;
      this.rememberDm(partner);
      void this.subscribe(channel);
    }
  }

  // ── tasks and notifications ──────────────────────────────────────────────

  private async loadTasks(): Promise<void> {
    const buffered: TaskEvent[] = [];
    this.taskBuffer = buffered;
    const load = ++this.taskLoads;
    try {
      const { tasks } = await this.session.request<{ tasks: Task[] }>('GET', '/tasks');
      // A later load started since: its answer is the newer one.
      if (load !== this.taskLoads) return;
      let list = tasks.filter((task) => !this.deletedTasks.has(task.id));
      for (const event of buffered) list = applyTaskEvent(list, event, this.deletedTasks);
      this.tasks = list;
    } catch (error) {
      this.showToast(`Could not load tasks: ${describe(error)}`);
    } finally {
      if (this.taskBuffer === buffered) this.taskBuffer = undefined;
    }
    this.renderTasks();
  }

  private onTaskEvent(event: TaskEvent): void {
    this.taskBuffer?.push(event);
    this.tasks = applyTaskEvent(this.tasks, event, this.deletedTasks);
    this.renderTasks();
  }

  private renderTasks(): void {
    if (this.view instanceof TasksView) this.view.setTasks(this.tasks);
    this.renderSidebar();
  }

  private async taskRequest(method: string, path: string, body?: unknown): Promise<void> {
    try {
      const task = await this.session.request<Task | undefined>(method, path, body);
      // The same change also comes as an event; applying it now just makes the board answer at once.
      if (task) this.onTaskEvent({ event: method === 'POST' ? 'task.created' : 'task.updated', task });
    } catch (error) {
      throw new Error(describe(error));
    }
  }

  private async loadNotifications(channel: string): Promise<void> {
    const mine = channel === `user:${this.me}`;
    try {
      const { messages } = await this.client.history(channel, { limit: mine ? USER_HISTORY : 20 });
      this.notifications = this.notifications.filter((n) => n.channel !== channel);
      this.addNotifications(messages, false);
      if (mine) this.discoverDms(messages, false);
    } catch {
      // Notifications are a convenience: the live ones still arrive.
    }
  }

  private addNotifications(messages: readonly ChatMessage[], live: boolean): void {
    const known = new Set(this.notifications.map((n) => n.id));
    const fresh = messages.filter((m) => !known.has(m.id));
    if (fresh.length === 0) return;
    this.notifications = [...this.notifications, ...fresh]
      .sort((a, b) => Date.parse(b.ts) - Date.parse(a.ts) || b.offset - a.offset)
      .slice(0, MAX_NOTIFICATIONS);
    if (live) {
      const watching = this.route.view === 'notifications' && document.visibilityState === 'visible';
      // A new DM is counted on the DM itself, not twice.
      if (!watching) {
        this.notificationsUnread += fresh.filter(
          (m) => m.from !== this.me && dmStartedBy(m, this.me) === undefined,
        ).length;
      }
    }
    if (this.view instanceof NotificationsView) this.view.setItems(this.notifications);
    this.renderSidebar();
  }

  // ── routing and views ────────────────────────────────────────────────────

  private navigate(route: Route): void {
    const hash = routeHash(route);
    if (location.hash === hash) this.onRoute();
    else location.hash = hash;
  }

  private onRoute(): void {
    let route = parseRoute(location.hash);
    if (route.view === 'home' && this.rooms.length > 0) {
      const first = this.rooms.find((r) => r.name === 'general') ?? this.rooms[0]!;
      route = { view: 'room', room: first.name };
      history.replaceState(null, '', routeHash(route));
    }
    if (route.view === 'dm' && route.user === this.me) route = { view: 'home' };
    this.route = route;
    this.activeChannel = undefined;
    this.setNavOpen(false);
    switch (route.view) {
      case 'room':
        this.openConversation(`room:${route.room}`, 'room', route.room);
        break;
      case 'dm':
        this.rememberDm(route.user);
        this.openConversation(dmChannel(this.me, route.user), 'dm', route.user);
        break;
      case 'tasks': {
        const view = new TasksView({
          create: (title) => this.taskRequest('POST', '/tasks', { title }),
          update: (id, patch) => this.taskRequest('PATCH', `/tasks/${encodeURIComponent(id)}`, patch),
          remove: async (id) => {
            await this.taskRequest('DELETE', `/tasks/${encodeURIComponent(id)}`);
            const task = this.tasks.find((t) => t.id === id);
            if (task) this.onTaskEvent({ event: 'task.deleted', task });
          },
        });
        view.setTasks(this.tasks);
        this.show(view, 'Tasks');
        break;
      }
      case 'notifications': {
        const view = new NotificationsView(this.me);
        view.setItems(this.notifications);
        this.notificationsUnread = 0;
        this.show(view, 'Notifications');
        break;
      }
      case 'home':
        this.show(undefined, 'Welcome');
        replace(this.main, welcome());
        break;
    }
    this.renderSidebar();
  }

  private openConversation(channel: string, kind: 'room' | 'dm', name: string): void {
    const room = kind === 'room' ? this.rooms.find((r) => r.name === name) : undefined;
    const view = new ConversationView({
      channel,
      kind,
      name,
      me: this.me,
      isPrivate: kind === 'dm' || room?.private === true,
      members: room?.private ? room.members : undefined,
      canAddMembers: room?.private === true && room.creator === this.me,
      send: (text, key) => this.send(channel, text, key),
      typing: () => this.sendTyping(channel),
      loadOlder: () => this.loadOlder(channel),
      addMember: (username) => this.addMember(name, username),
      openDm: (user) => this.navigate({ view: 'dm', user }),
    });
    this.activeChannel = channel;
    this.show(view, kind === 'room' ? `#${name}` : name);
    view.focus();
    const state = this.state(channel);
    state.unread = 0;
    if (state.loaded) view.setMessages(state.messages, state.hasMore);
    this.renderActivePresence();
    const attach = (): void => {
      this.subscribe(channel).then(
        () => {
          if (channel !== this.activeChannel) return;
          if (!room && kind === 'room') void this.refreshRooms(true);
          if (!state.loaded) void this.loadLatest(channel).catch((error) => this.showToast(describe(error)));
          if (!state.presence) void this.loadPresence(channel);
        },
        (error: unknown) => {
          if (channel !== this.activeChannel) return;
          if (error instanceof ParleyError && (error.code === 'disconnected' || error.code === 'timeout')) {
            // Not refused, just not connected: try again once the connection is back.
            this.retryActive = attach;
            return;
          }
          replace(
            this.main,
            h(
              'section',
              { class: 'empty-view', testid: 'conversation-error' },
              h('h2', {}, kind === 'room' ? `#${name}` : name),
              h('p', {}, describe(error)),
            ),
          );
        },
      );
    };
    this.retryActive = undefined;
    attach();
  }

  private show(view: ConversationView | TasksView | NotificationsView | undefined, title: string): void {
    this.view = view;
    this.title = title;
    if (view) replace(this.main, view.element);
  }

  private renderSidebar(): void {
    const unread = new Map<string, number>();
    let total = this.notificationsUnread;
    for (const [channel, state] of this.channels) {
      if (state.unread > 0) unread.set(channel, state.unread);
      total += state.unread;
    }
    // The tab's title counts what is unread, so it shows from another tab.
    document.title = `${total > 0 ? `(${total}) ` : ''}${this.title} · Parley`;
    this.sidebar.update({
      rooms: this.rooms,
      dms: this.dms,
      route: this.route,
      unread,
      notificationsUnread: this.notificationsUnread,
      openTasks: this.tasks.filter((t) => !t.done).length,
    });
  }

  private setNavOpen(open: boolean): void {
    this.element.classList.toggle('nav-open', open);
    this.menuButton.setAttribute('aria-expanded', String(open));
  }

  private showToast(text: string): void {
    this.toast.textContent = text;
    this.toast.hidden = false;
    clearTimeout(this.toastTimer);
    this.toastTimer = setTimeout(() => {
      this.toast.hidden = true;
    }, 6000);
  }
}

function welcome(): HTMLElement {
  return h(
    'section',
    { class: 'empty-view', testid: 'welcome' },
    h('h2', {}, 'Welcome to Parley'),
    h('p', {}, 'There are no rooms yet. Create one with the + next to “Rooms”, or start a direct message.'),
    h(
      'p',
      {},
      h('a', { href: routeHash({ view: 'room', room: 'general' }), class: 'button primary' }, 'Open #general'),
    ),
  );
}

function describe(error: unknown): string {
  if (error instanceof ApiError || error instanceof ParleyError) {
    if (error.code === 'forbidden') return 'You do not have access to this conversation.';
    if (error.code === 'disconnected') return 'Not connected. It will work again once the connection is back.';
    if (error.code === 'timeout') return 'The server did not answer in time. Try again.';
    return error.message;
  }
  return error instanceof Error ? error.message : String(error);
}

function listen(target: EventTarget, type: string, handler: (event: Event) => void): () => void {
  target.addEventListener(type, handler);
  return () => target.removeEventListener(type, handler);
}

function dmKey(me: string): string {
  return `parley.dms.${me}`;
}

/**
 * DM partners are kept per browser: the server has no list of a user's
 * conversations. A fresh browser finds the DMs others started in the
 * `dm.started` notifications of `user:<me>` (see discoverDms).
 */
function loadDms(me: string): string[] {
  try {
    const list = JSON.parse(localStorage.getItem(dmKey(me)) ?? '[]') as unknown;
    return Array.isArray(list) ? list.filter((u): u is string => typeof u === 'string' && NAME.test(u)) : [];
  } catch {
    return [];
  }
}

function saveDms(me: string, dms: readonly string[]): void {
  try {
    localStorage.setItem(dmKey(me), JSON.stringify(dms));
  } catch {
    // Storage full or disabled: the list lasts as long as the page.
  }
}
