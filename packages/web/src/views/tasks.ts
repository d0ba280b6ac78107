import { h, icon, replace } from '../dom.ts';
import type { Task } from '../model.ts';

export interface TasksOptions {
  create(title: string): Promise<void>;
  update(id: string, patch: Partial<Pick<Task, 'title' | 'done'>>): Promise<void>;
  remove(id: string): Promise<void>;
}

interface Row {
  item: HTMLLIElement;
  checkbox: HTMLInputElement;
  title: HTMLElement;
  description: HTMLElement;
  meta: HTMLElement;
  editing: boolean;
}

/**
 * The shared task board. Rows are kept by task id and updated in place, so
 * a change arriving from someone else does not take away a title being edited.
 */
export class TasksView {
  readonly element: HTMLElement;
  private readonly list: HTMLUListElement;
  private readonly summary: HTMLElement;
  private readonly error: HTMLElement;
  private readonly rows = new Map<string, Row>();

  constructor(private readonly options: TasksOptions) {
    const input = h('input', {
      class: 'task-input',
      testid: 'task-title-input',
      placeholder: 'Add a task…',
      'aria-label': 'New task title',
      maxlength: 200,
      required: true,
    });
    this.list = h('ul', { class: 'task-list', testid: 'task-list' });
    this.summary = h('span', { class: 'subtle', testid: 'task-summary' });
    this.error = h('p', { class: 'form-error', testid: 'task-error', role: 'alert' });
    this.element = h(
      'section',
      { class: 'tasks-view', testid: 'tasks-view' },
      h(
        'header',
        { class: 'view-header' },
        h('h2', { class: 'conversation-title' }, icon('tasks'), 'Tasks'),
        this.summary,
      ),
      h(
        'div',
        { class: 'view-body' },
        h(
          'form',
          {
            class: 'task-form',
            testid: 'task-form',
            onsubmit: async (event) => {
              event.preventDefault();
              const title = input.value.trim();
              if (!title) return;
              this.error.textContent = '';
              input.disabled = true;
              try {
                await options.create(title);
                input.value = '';
              } catch (error) {
                this.fail(error);
              } finally {
                input.disabled = false;
                input.focus();
              }
            },
          },
          input,
          h('button', { type: 'submit', class: 'button primary', testid: 'task-add' }, icon('plus'), 'Add'),
        ),
        this.error,
        this.list,
      ),
    );
  }

  setTasks(tasks: readonly Task[]): void {
    const ordered = [...tasks].sort(
      (a, b) => Number(a.done) - Number(b.done) || Date.parse(a.createdAt) - Date.parse(b.createdAt),
    );
    const seen = new Set<string>();
    const items: HTMLLIElement[] = [];
    for (const task of ordered) {
      seen.add(task.id);
      let row = this.rows.get(task.id);
      if (!row) {
        row = this.row(task);
        this.rows.set(task.id, row);
      }
      this.update(row, task);
      items.push(row.item);
    }
    for (const id of [...this.rows.keys()]) if (!seen.has(id)) this.rows.delete(id);
    if (items.length === 0) {
      replace(
        this.list,
        h('li', { class: 'empty-state', testid: 'tasks-empty' }, 'No tasks yet. Add the first one above.'),
      );
    } else {
      // replaceChildren moves the kept rows rather than recreating them: focus and edits survive.
      const focused = document.activeElement;
      this.list.replaceChildren(...items);
      if (focused instanceof HTMLElement && this.list.contains(focused)) focused.focus();
    }
    const open = tasks.filter((t) => !t.done).length;
    this.summary.textContent = `${open} open · ${tasks.length - open} done`;
  }

  private row(task: Task): Row {
    const checkbox = h('input', {
      type: 'checkbox',
      class: 'task-done',
      testid: 'task-done',
      'aria-label': 'Done',
    });
    const title = h('span', { class: 'task-title', testid: 'task-title' });
    const description = h('span', { class: 'task-description', testid: 'task-description' });
    const meta = h('span', { class: 'task-meta subtle' });
    const row: Row = {
      item: h('li', { class: 'task', testid: 'task', 'data-task-id': task.id }),
      checkbox,
      title,
      description,
      meta,
      editing: false,
    };
    checkbox.addEventListener('change', () => {
      this.options.update(task.id, { done: checkbox.checked }).catch((error) => {
        checkbox.checked = !checkbox.checked;
        this.fail(error);
      });
    });
    const edit = h(
      'button',
      {
        type: 'button',
        class: 'icon-button ghost',
        testid: 'task-edit',
        'aria-label': 'Edit title',
        title: 'Edit title',
        onclick: () => this.edit(row, task.id),
      },
      icon('edit'),
    );
    const remove = h(
      'button',
      {
        type: 'button',
        class: 'icon-button ghost danger',
        testid: 'task-delete',
        'aria-label': 'Delete task',
        title: 'Delete task',
        onclick: () => {
          this.options.remove(task.id).catch((error) => this.fail(error));
        },
      },
      icon('trash'),
    );
    title.addEventListener('dblclick', () => this.edit(row, task.id));
    row.item.append(
      h('label', { class: 'task-check' }, checkbox),
      h('div', { class: 'task-main' }, title, description, meta),
      h('div', { class: 'task-actions' }, edit, remove),
    );
    return row;
  }

  private update(row: Row, task: Task): void {
    row.item.classList.toggle('done', task.done);
    row.checkbox.checked = task.done;
    if (!row.editing) row.title.textContent = task.title;
    row.title.dataset.title = task.title;
    const added = new Date(task.createdAt).toLocaleString([], {
      month: 'short',
      day: 'numeric',
      hour: '2-digit',
      minute: '2-digit',
    });
    row.meta.textContent = `Added by ${task.createdBy} · ${added}`;
    // Descriptions come from the API (this board only sets titles); shown when there is one.
    row.description.textContent = task.description ?? '';
    row.description.hidden = !task.description;
  }

  private edit(row: Row, id: string): void {
    if (row.editing) return;
    row.editing = true;
    const original = row.title.dataset.title ?? '';
    const input = h('input', {
      class: 'task-title-edit',
      testid: 'task-title-edit',
      value: original,
      maxlength: 200,
      'aria-label': 'Task title',
    });
    let finished = false;
    const finish = async (save: boolean) => {
      if (finished) return;
      finished = true;
      const title = input.value.trim();
      row.editing = false;
      row.title.replaceChildren(row.title.dataset.title ?? original);
      if (!save || !title || title === original) return;
      row.title.textContent = title;
      try {
        await this.options.update(id, { title });
      } catch (error) {
        row.title.textContent = row.title.dataset.title ?? original;
        this.fail(error);
      }
    };
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') {
        event.preventDefault();
        void finish(true);
      } else if (event.key === 'Escape') {
        void finish(false);
      }
    });
    input.addEventListener('blur', () => void finish(true));
    row.title.replaceChildren(input);
    input.focus();
    input.select();
  }

  private fail(error: unknown): void {
    this.error.textContent = error instanceof Error ? error.message : String(error);
  }
}
