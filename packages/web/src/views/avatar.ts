import { h } from '../dom.ts';

/** A stable hue per name, so a person keeps their colour across messages and sessions. */
export function hueOf(name: string): number {
  let hash = 0;
  for (let i = 0; i < name.length; i++) hash = (hash * 31 + name.charCodeAt(i)) >>> 0;
  return hash % 360;
}

/** The first letter of a name on a coloured disc. */
export function avatar(name: string, size: 'small' | 'normal' = 'normal'): HTMLSpanElement {
  const element = h('span', { class: `avatar ${size}`, 'aria-hidden': 'true' }, (name[0] ?? '?').toUpperCase());
  // Through the CSSOM, which the page's style-src 'self' policy allows (a style attribute it would not).
  element.style.setProperty('--hue', String(hueOf(name)));
  return element;
}
