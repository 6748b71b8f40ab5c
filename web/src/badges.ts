// A tile's event badge: which of its camera's events are going on (pure state; `paint`
// draws it). A `start` makes its kind active until an `end` of the same kind; a `pulse`
// seen live flashes the badge for PULSE_MS. What the badge says is text ("● motion"), with
// the time of the last event as its tooltip, so it does not rest on colour alone.

/** The state of an event as a word (node/src/events/mod.rs `state_word`). */
export type EventWord = 'start' | 'end' | 'pulse' | '?'

/** One checked event, as the badge needs it. */
export interface Happened { kind: string, state: EventWord, unixUs: number }

/** How long a pulse shows. */
export const PULSE_MS = 3000
/** Kinds held at once (active or pulsing): a camera has a few; more would be noise. */
export const MAX_KINDS = 16

/** What a badge shows at one moment. */
export interface BadgeView {
  visible: boolean
  /** The kinds going on, then those pulsing, as the node names them. */
  active: string[]
  pulsing: string[]
  /** The words shown after the dot: each kind's label, joined by " · ". */
  text: string
  title: string
}

/** A kind for people: `onvif/<topic>` is the topic's last segment without its namespace prefix. */
export function label (kind: string): string {
  if (!kind.startsWith('onvif/')) return kind
  const topic = kind.slice('onvif/'.length)
  const last = topic.split('/').filter(s => s !== '').pop() ?? topic
  const bare = last.replace(/^[^:]*:/, '')
  return bare !== '' ? bare : last !== '' ? last : kind
}

function when (unixUs: number): string {
  const d = new Date(unixUs / 1000)
  return Number.isNaN(d.getTime()) ? String(unixUs) : d.toISOString()
}

function keepBounded (m: Map<string, number>): void {
  while (m.size > MAX_KINDS) {
    const first = m.keys().next().value
    if (first == null) break
    m.delete(first)
  }
}

export class Badge {
  /** Active kinds and when each started (the camera's Unix µs), oldest first. */
  private readonly active = new Map<string, number>()
  /** Pulsing kinds and until when (the page's clock, ms). */
  private readonly pulses = new Map<string, number>()
  last?: Happened

  /**
   * Takes one event in. `live`: it came after the past events (a pulse from the past
   * does not flash now); `nowMs` is the page's clock.
   */
  apply (h: Happened, nowMs: number, live: boolean): void {
    this.last = h
    switch (h.state) {
      case 'start':
        this.active.delete(h.kind)
        this.active.set(h.kind, h.unixUs)
        keepBounded(this.active)
        break
      case 'end': {
        // An end from before the start it would close (out of order) leaves it going on.
        const since = this.active.get(h.kind)
        if (since != null && h.unixUs >= since) this.active.delete(h.kind)
        break
      }
      case 'pulse':
        if (live) {
          this.pulses.delete(h.kind)
          this.pulses.set(h.kind, nowMs + PULSE_MS)
          keepBounded(this.pulses)
        }
        break
      default:
        break
    }
  }

  /** Forgets everything (the stream ended: what is going on is no longer known). */
  clear (): void {
    this.active.clear()
    this.pulses.clear()
    this.last = undefined
  }

  view (nowMs: number): BadgeView {
    for (const [k, until] of this.pulses) if (until <= nowMs) this.pulses.delete(k)
    const active = [...this.active.keys()]
    const pulsing = [...this.pulses.keys()].filter(k => !this.active.has(k))
    const labels: string[] = []
    for (const k of [...active, ...pulsing]) if (!labels.includes(label(k))) labels.push(label(k))
    const lines = [...this.active].map(([k, since]) => `${k} since ${when(since)}`)
    if (this.last != null) lines.push(`last event: ${this.last.kind} ${this.last.state} at ${when(this.last.unixUs)}`)
    return { visible: labels.length > 0, active, pulsing: [...this.pulses.keys()], text: labels.join(' · '), title: lines.join('\n') }
  }
}

/** Draws `v` into the tile's badge element (hidden when nothing goes on). */
export function paint (el: HTMLElement, v: BadgeView): void {
  el.hidden = !v.visible
  el.title = v.title
  el.classList.toggle('pulse', v.pulsing.length > 0)
  const words = el.querySelector('.what')
  if (words != null && words.textContent !== v.text) words.textContent = v.text
}
