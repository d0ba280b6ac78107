import { newIdempotencyKey } from '@parley/client';
import { h, icon, replace } from '../dom.ts';
import {
  type ChatMessage,
  DraftKeys,
  formatDay,
  formatTime,
  messageText,
  NAME,
  sameDay,
  startsGroup,
  typingText,
} from '../model.ts';
import { avatar } from './avatar.ts';

export interface ConversationOptions {
  channel: string;
  kind: 'room' | 'dm';
  /** The room's name, or the other user of a DM. */
  name: string;
  me: string;
  isPrivate: boolean;
  /** Private rooms only: the members, when the room list says. */
  members?: string[];
  /** The creator of a private room may add members. */
  canAddMembers: boolean;
  /** `idempotencyKey` is the same when the user sends a failed draft again. */
  send(text: string, idempotencyKey: string): Promise<void>;
  typing(): void;
  loadOlder(): Promise<void>;
  addMember(username: string): Promise<void>;
  openDm(user: string): void;
}

/** Scrolled this close to the top, the previous page of history is fetched. */
const LOAD_OLDER_THRESHOLD_PX = 120;
/** This close to the bottom counts as reading the latest messages: new ones scroll into view. */
const STICKY_BOTTOM_PX = 80;

/** A room or a DM: header with who is online, the message list, typing line and composer. */
export class ConversationView {
  readonly element: HTMLElement;
  private readonly list: HTMLOListElement;
  private readonly presenceList: HTMLElement;
  private readonly presenceCount: HTMLElement;
  private readonly typingLine: HTMLElement;
  private readonly input: HTMLTextAreaElement;
  private readonly composerError: HTMLElement;
  private readonly newMessages: HTMLButtonElement;
  private readonly top: HTMLLIElement;
  private rendered: ChatMessage[] = [];
  private hasMore = false;
  private loadingOlder = false;
  private historyLoaded = false;
  private readonly drafts = new DraftKeys(newIdempotencyKey);

  constructor(private readonly options: ConversationOptions) {
    const { kind, name } = options;
    this.presenceList = h('ul', { class: 'presence-list', testid: 'presence-list', 'aria-label': 'Online now' });
    this.presenceCount = h('span', { class: 'presence-count', testid: 'presence-count' });
    this.typingLine = h('div', { class: 'typing-indicator', testid: 'typing-indicator', 'aria-live': 'polite' });
    this.composerError = h('p', { class: 'composer-error', testid: 'composer-error', role: 'alert' });
    this.top = h('li', { class: 'history-top' });
    this.list = h('ol', {
      class: 'message-list',
      testid: 'message-list',
      'aria-label': `Messages in ${kind === 'room' ? `#${name}` : name}`,
      'aria-live': 'polite',
      onscroll: () => this.onScroll(),
    });
    this.list.append(this.top);
    this.newMessages = h(
      'button',
      {
        type: 'button',
        class: 'new-messages',
        testid: 'new-messages',
        hidden: true,
        onclick: () => this.scrollToBottom(),
      },
      'New messages ↓',
    );
    this.input = h('textarea', {
      class: 'composer-input',
      testid: 'composer-input',
      rows: 1,
      maxlength: 4000,
      placeholder: kind === 'room' ? `Message #${name}` : `Message ${name}`,
      'aria-label': 'Message',
      oninput: () => {
        this.autosize();
        if (this.input.value.trim()) options.typing();
      },
      onkeydown: (event) => {
        if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
          event.preventDefault();
          this.submit();
        }
      },
    });

    const title =
      kind === 'room'
        ? h(
            'h2',
            { class: 'conversation-title', testid: 'conversation-title' },
            icon(options.isPrivate ? 'lock' : 'hash', options.isPrivate ? 'private room' : 'room'),
            name,
          )
        : h('h2', { class: 'conversation-title', testid: 'conversation-title' }, icon('at', 'direct message'), name);

    this.element = h(
      'section',
      { class: 'conversation', testid: 'conversation', 'data-channel': options.channel },
      h(
        'header',
        { class: 'view-header conversation-header' },
        h(
          'div',
          { class: 'conversation-heading' },
          title,
          options.isPrivate && options.members
            ? h(
                'span',
                { class: 'subtle', testid: 'member-count', title: options.members.join(', ') },
                `${options.members.length} members`,
              )
            : null,
          options.canAddMembers ? this.addMemberControl() : null,
        ),
        h('div', { class: 'presence', testid: 'presence' }, icon('users'), this.presenceCount, this.presenceList),
      ),
      h('div', { class: 'message-pane' }, this.list, this.newMessages),
      h(
        'form',
        {
          class: 'composer',
          testid: 'composer',
          onsubmit: (event) => {
            event.preventDefault();
            this.submit();
          },
        },
        this.typingLine,
        this.composerError,
        h(
          'div',
          { class: 'composer-row' },
          this.input,
          h(
            'button',
            { type: 'submit', class: 'button primary icon-button', testid: 'composer-send', 'aria-label': 'Send' },
            icon('send'),
          ),
        ),
      ),
    );
    this.setPresence(undefined);
    this.renderTop();
  }

  focus(): void {
    // On a phone this would pop the keyboard over the messages the user came to read.
    if (window.matchMedia('(pointer: fine)').matches) this.input.focus();
  }

  /**
   * Shows `messages` (the channel's whole loaded list, oldest first). A
   * list that only grew at the end is appended to; anything else is drawn
   * again, keeping the reader's place when older messages came in on top.
   */
  setMessages(messages: readonly ChatMessage[], hasMore: boolean): void {
    this.hasMore = hasMore;
    this.historyLoaded = true;
    const previous = this.rendered;
    const first = previous[0];
    const last = previous[previous.length - 1];
    const grewAtEnd =
      first !== undefined &&
      last !== undefined &&
      messages[0]?.id === first.id &&
      messages[previous.length - 1]?.id === last.id;
    if (grewAtEnd) {
      const added = messages.slice(previous.length);
      if (added.length === 0) {
        this.renderTop();
        return;
      }
      const stick = this.nearBottom() || added.some((m) => m.from === this.options.me);
      let before = last;
      for (const message of added) {
        this.list.append(...this.messageItems(before, message));
        before = message;
      }
      this.rendered = [...messages];
      this.renderTop();
      if (stick) this.scrollToBottom();
      else this.newMessages.hidden = false;
      return;
    }
    const olderOnTop =
      first !== undefined && messages.length > previous.length && messages.some((m) => m.id === first.id);
    const anchor = olderOnTop ? this.list.scrollHeight - this.list.scrollTop : 0;
    const items: Node[] = [];
    let before: ChatMessage | undefined;
    for (const message of messages) {
      items.push(...this.messageItems(before, message));
      before = message;
    }
    replace(this.list, this.top, ...items);
    this.rendered = [...messages];
    this.renderTop();
    if (olderOnTop) this.list.scrollTop = this.list.scrollHeight - anchor;
    else this.scrollToBottom();
    this.fillViewport();
  }

  setPresence(users: readonly string[] | undefined): void {
    if (users === undefined) {
      this.presenceCount.textContent = '…';
      this.presenceList.replaceChildren();
      return;
    }
    const sorted = [...users].sort((a, b) => (a === this.options.me ? -1 : b === this.options.me ? 1 : a < b ? -1 : 1));
    this.presenceCount.textContent = `${sorted.length} online`;
    replace(
      this.presenceList,
      ...sorted.map((user) =>
        h(
          'li',
          { class: 'presence-user', testid: 'presence-user', 'data-user': user },
          user === this.options.me || this.options.kind === 'dm'
            ? h(
                'span',
                { class: 'chip' },
                h('span', { class: 'online-dot' }),
                user === this.options.me ? `${user} (you)` : user,
              )
            : h(
                'button',
                {
                  type: 'button',
                  class: 'chip',
                  title: `Message ${user}`,
                  onclick: () => this.options.openDm(user),
                },
                h('span', { class: 'online-dot' }),
                user,
              ),
        ),
      ),
    );
  }

  setTyping(users: readonly string[]): void {
    this.typingLine.textContent = typingText(users);
  }

  private submit(): void {
    const text = this.input.value.trim();
    if (!text) return;
    this.input.value = '';
    this.autosize();
    this.composerError.textContent = '';
    const key = this.drafts.take(text);
    this.options.send(text, key).catch((error: unknown) => {
      this.drafts.fail(text, key);
      // Give the text back, unless the user has started the next message.
      if (!this.input.value) {
        this.input.value = text;
        this.autosize();
      }
      this.composerError.textContent = `Not sent: ${error instanceof Error ? error.message : String(error)}`;
    });
  }

  private autosize(): void {
    this.input.style.height = 'auto';
    this.input.style.height = `${Math.min(this.input.scrollHeight, 160)}px`;
  }

  private messageItems(previous: ChatMessage | undefined, message: ChatMessage): HTMLLIElement[] {
    const items: HTMLLIElement[] = [];
    if (!previous || !sameDay(previous.ts, message.ts)) {
      items.push(h('li', { class: 'day-divider', role: 'separator' }, h('span', {}, formatDay(message.ts))));
    }
    const first = startsGroup(previous, message);
    const mine = message.from === this.options.me;
    items.push(
      h(
        'li',
        {
          class: `message${first ? '' : ' continued'}${mine ? ' mine' : ''}`,
          testid: 'message',
          'data-offset': message.offset,
          'data-from': message.from,
        },
        first ? avatar(message.from) : h('span', { class: 'avatar-spacer' }),
        h(
          'div',
          { class: 'message-body' },
          first
            ? h(
                'div',
                { class: 'message-meta' },
                h('span', { class: 'message-author', testid: 'message-author' }, message.from),
                h(
                  'time',
                  { class: 'message-time', datetime: message.ts, title: new Date(message.ts).toLocaleString() },
                  formatTime(message.ts),
                ),
              )
            : null,
          h('div', { class: 'message-text', testid: 'message-text' }, messageText(message.data)),
        ),
      ),
    );
    return items;
  }

  private renderTop(): void {
    const { kind, name } = this.options;
    if (!this.historyLoaded) {
      replace(this.top, h('span', { class: 'subtle' }, 'Loading messages…'));
    } else if (this.hasMore) {
      replace(
        this.top,
        h(
          'button',
          {
            type: 'button',
            class: 'link-button',
            testid: 'load-older',
            disabled: this.loadingOlder,
            onclick: () => this.loadOlder(),
          },
          this.loadingOlder ? 'Loading older messages…' : 'Load older messages',
        ),
      );
    } else {
      replace(
        this.top,
        h(
          'div',
          { class: 'history-start', testid: 'history-start' },
          h(
            'strong',
            {},
            kind === 'room'
              ? `This is the beginning of #${name}`
              : `This is the beginning of your conversation with ${name}`,
          ),
          h(
            'span',
            { class: 'subtle' },
            kind === 'room'
              ? this.options.isPrivate
                ? 'A private room: only its members can read it.'
                : 'A public room: everyone signed in can join.'
              : 'Only the two of you can read it.',
          ),
        ),
      );
    }
  }

  private onScroll(): void {
    if (this.nearBottom()) this.newMessages.hidden = true;
    if (this.list.scrollTop < LOAD_OLDER_THRESHOLD_PX) this.loadOlder();
  }

  private loadOlder(): void {
    if (!this.hasMore || this.loadingOlder) return;
    this.loadingOlder = true;
    this.renderTop();
    this.options
      .loadOlder()
      .catch(() => undefined)
      .finally(() => {
        this.loadingOlder = false;
        this.renderTop();
      });
  }

  /** A first page too short to scroll could never reach the top by scrolling: fetch more until it can. */
  private fillViewport(): void {
    requestAnimationFrame(() => {
      if (this.element.isConnected && this.list.scrollHeight <= this.list.clientHeight) this.loadOlder();
    });
  }

  private nearBottom(): boolean {
    return this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < STICKY_BOTTOM_PX;
  }

  private scrollToBottom(): void {
    this.list.scrollTop = this.list.scrollHeight;
    this.newMessages.hidden = true;
  }

  private addMemberControl(): HTMLElement {
    const input = h('input', {
      class: 'inline-input',
      testid: 'add-member-input',
      placeholder: 'username',
      autocapitalize: 'none',
      spellcheck: 'false',
      'aria-label': 'Username to add',
      maxlength: 64,
    });
    const status = h('span', { class: 'subtle', testid: 'add-member-status', role: 'status' });
    const form = h(
      'form',
      {
        class: 'add-member-form',
        testid: 'add-member-form',
        hidden: true,
        onsubmit: async (event) => {
          event.preventDefault();
          const user = input.value.trim().toLowerCase();
          if (!NAME.test(user)) {
            status.textContent = 'Not a valid username';
            return;
          }
          status.textContent = 'Adding…';
          try {
            await this.options.addMember(user);
            status.textContent = `Added ${user}`;
            input.value = '';
          } catch (error) {
            status.textContent = error instanceof Error ? error.message : String(error);
          }
        },
      },
      input,
      h('button', { type: 'submit', class: 'button small', testid: 'add-member-submit' }, 'Add'),
      status,
    );
    const toggle = h(
      'button',
      {
        type: 'button',
        class: 'button small ghost',
        testid: 'add-member-button',
        onclick: () => {
          form.hidden = !form.hidden;
          if (!form.hidden) input.focus();
        },
      },
      icon('plus'),
      'Add member',
    );
    return h('div', { class: 'add-member' }, toggle, form);
  }
}
