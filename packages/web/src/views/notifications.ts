import { h, icon, replace } from '../dom.ts';
import { type ChatMessage, describeNotification, formatDay, formatTime, isTaskEvent, sameDay } from '../model.ts';

/** The notifications panel: task board changes (`topic:tasks`) and messages for this user (`user:<me>`). */
export class NotificationsView {
  readonly element: HTMLElement;
  private readonly list: HTMLUListElement;

  constructor(private readonly me: string) {
    this.list = h('ul', { class: 'notification-list', testid: 'notification-list' });
    this.element = h(
      'section',
      { class: 'notifications-view', testid: 'notifications-view' },
      h('header', { class: 'view-header' }, h('h2', { class: 'conversation-title' }, icon('bell'), 'Notifications')),
      h('div', { class: 'view-body' }, this.list),
    );
  }

  /** `items` newest first. */
  setItems(items: readonly ChatMessage[]): void {
    if (items.length === 0) {
      replace(
        this.list,
        h(
          'li',
          { class: 'empty-state', testid: 'notifications-empty' },
          'Nothing yet. Changes to the task board and messages for you show up here.',
        ),
      );
      return;
    }
    const now = new Date().toISOString();
    replace(
      this.list,
      ...items.map((message) => {
        const task = isTaskEvent(message.data);
        return h(
          'li',
          {
            class: `notification${task ? ' task-event' : ''}`,
            testid: 'notification',
            'data-channel': message.channel,
          },
          h('span', { class: 'notification-icon' }, icon(task ? 'tasks' : 'bell')),
          h(
            'div',
            { class: 'notification-body' },
            h(
              'span',
              { class: 'notification-text', testid: 'notification-text' },
              describeNotification(message, this.me),
            ),
            h(
              'time',
              { class: 'subtle', datetime: message.ts },
              sameDay(message.ts, now) ? formatTime(message.ts) : `${formatDay(message.ts)} ${formatTime(message.ts)}`,
            ),
          ),
        );
      }),
    );
  }
}
