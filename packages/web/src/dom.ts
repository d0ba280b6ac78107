/**
 * The one way this app builds DOM. Strings become text nodes and attribute
 * values, never markup: user content cannot inject HTML, whatever it holds.
 */

export type Child = Node | string | number | null | undefined | false;

type Handler<E extends Event = Event> = (event: E) => void;

export interface Props {
  class?: string;
  /** `data-testid`, the stable hook for tests. */
  testid?: string;
  onclick?: Handler<MouseEvent>;
  oninput?: Handler;
  onchange?: Handler;
  onsubmit?: Handler<SubmitEvent>;
  onkeydown?: Handler<KeyboardEvent>;
  onscroll?: Handler;
  onblur?: Handler<FocusEvent>;
  /** Any other attribute; `true` sets it empty, `false`/`undefined` leaves it out. */
  [attribute: string]: string | number | boolean | undefined | Handler<any>;
}

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  props: Props = {},
  ...children: Child[]
): HTMLElementTagNameMap[K] {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === false) continue;
    if (typeof value === 'function') {
      element.addEventListener(key.slice(2), value as EventListener);
    } else if (key === 'class') {
      element.className = String(value);
    } else if (key === 'testid') {
      element.dataset.testid = String(value);
    } else {
      element.setAttribute(key, value === true ? '' : String(value));
    }
  }
  append(element, ...children);
  return element;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    parent.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
  }
}

/** Replaces every child of `parent`. */
export function replace(parent: Element, ...children: Child[]): void {
  parent.replaceChildren();
  append(parent, ...children);
}

/** An inline SVG icon from a path (the paths are constants of this file, never data). */
export function icon(name: keyof typeof ICONS, label?: string): SVGSVGElement {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', `icon icon-${name}`);
  if (label) {
    svg.setAttribute('role', 'img');
    svg.setAttribute('aria-label', label);
  } else {
    svg.setAttribute('aria-hidden', 'true');
  }
  const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
  path.setAttribute('d', ICONS[name]);
  svg.appendChild(path);
  return svg;
}

const ICONS = {
  menu: 'M3 6h18M3 12h18M3 18h18',
  plus: 'M12 5v14M5 12h14',
  hash: 'M5 9h14M5 15h14M10 3 8 21M16 3l-2 18',
  lock: 'M6 11h12v10H6zM8 11V7a4 4 0 0 1 8 0v4',
  at: 'M16 12a4 4 0 1 1-8 0 4 4 0 0 1 8 0zM16 12v1.5a2.5 2.5 0 0 0 5 0V12a9 9 0 1 0-3.5 7.1',
  bell: 'M6 16V11a6 6 0 0 1 12 0v5l2 2H4zM10 21h4',
  check: 'M4 12l5 5L20 6',
  trash: 'M4 7h16M9 7V4h6v3M6 7l1 14h10l1-14',
  edit: 'M4 20h4L19 9l-4-4L4 16zM13 7l4 4',
  send: 'M4 12 20 4l-6 16-3-7z',
  users: 'M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM2 21a7 7 0 0 1 14 0M17 11a3 3 0 1 0 0-6M22 21a6 6 0 0 0-5-6',
  close: 'M6 6l12 12M18 6 6 18',
  tasks: 'M9 6h11M9 12h11M9 18h11M4 6l1 1 2-2M4 12l1 1 2-2M4 18l1 1 2-2',
  logout: 'M15 4h4v16h-4M10 8l-4 4 4 4M6 12h10',
} as const;
