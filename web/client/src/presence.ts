/**
 * Presence: who else is in a room (e.g. `pipelines:<id>`) and their ephemeral state — cursor,
 * selection, name, colour. Kept by the server in memory only (`/v1/presence`): a member joins
 * by posting its state, stays by posting again before the server's TTL runs out (a heartbeat
 * every third of it), and leaves by posting `null` (or by going quiet). The room's members
 * arrive as server-sent events over `fetch` (so the bearer token can travel in a header).
 */

import { Emitter } from './emitter.js'
import { AbortedError, type Transport } from './transport.js'

/** One member of a room. */
export interface PresenceMember {
  /** The member's id in this room, chosen by the server when it joined (client ids are private). */
  member: string
  /** The member's user (token subject), in jwt mode. */
  subject?: string
  /** What the member last posted. */
  state: Record<string, unknown>
  /** When it posted it (Unix ms, server clock). */
  updatedAt: number
  /** This client. */
  self: boolean
}

/** What a room needs from its client. */
export interface PresenceHost {
  url: string
  transport: Transport
  clientId: string
  /** The server's presence TTL in seconds. */
  ttlSecs(): number
}

/** Smallest interval between two state updates sent (later ones replace pending ones). */
const SEND_INTERVAL_MS = 50

/** A room this client watches and (after {@link PresenceRoom.join}) is present in. */
export class PresenceRoom {
  readonly events = new Emitter<{ change: PresenceMember[] }>()
  #members: PresenceMember[] = []
  /** This client's member id, once a post has told it. */
  #self: string | undefined
  #state: Record<string, unknown> | undefined
  #watch: AbortController | undefined
  #send: AbortController | undefined
  #heartbeat: ReturnType<typeof setInterval> | undefined
  #sendTimer: ReturnType<typeof setTimeout> | undefined
  #lastSent = 0
  #offOffline: () => void

  constructor(private readonly host: PresenceHost, readonly room: string) {
    // Offline, nobody else is known to be here.
    this.#offOffline = host.transport.events.on('connection', (c) => {
      if (c === 'disconnected' && this.#members.length > 0) this.#setMembers([])
      if (c === 'connected' && this.#state) this.#schedule()
    })
  }

  /** The members, this client included (flagged `self`). */
  get members(): PresenceMember[] {
    return this.#members
  }

  /** The members other than this client. */
  get others(): PresenceMember[] {
    return this.#members.filter((m) => !m.self)
  }

  /** Starts watching the room's members (without joining it). */
  watch(): void {
    if (this.#watch) return
    const abort = new AbortController()
    this.#watch = abort
    void this.#watchLoop(abort.signal)
  }

  /** Joins the room with `state` (also starts watching it). */
  join(state: Record<string, unknown>): void {
    this.#state = { ...state }
    this.watch()
    this.#schedule()
    if (!this.#heartbeat) {
      const every = Math.max(1, this.host.ttlSecs() / 3) * 1000
      this.#heartbeat = setInterval(() => this.#schedule(), every)
    }
  }

  /** Merges `partial` into this client's state and sends it (throttled). */
  update(partial: Record<string, unknown>): void {
    this.#state = { ...(this.#state ?? {}), ...partial }
    this.#schedule()
  }

  /** Leaves the room and stops watching it. */
  leave(): void {
    if (this.#heartbeat) clearInterval(this.#heartbeat)
    if (this.#sendTimer) clearTimeout(this.#sendTimer)
    this.#heartbeat = undefined
    this.#sendTimer = undefined
    this.#watch?.abort()
    this.#watch = undefined
    this.#send?.abort()
    this.#offOffline()
    if (this.#state) {
      this.#state = undefined
      const token = this.host.transport.token
      // keepalive: the request outlives a page being closed.
      void fetch(`${this.host.url}/v1/presence`, {
        method: 'POST',
        keepalive: true,
        headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        body: JSON.stringify({ room: this.room, client_id: this.host.clientId, state: null }),
      }).catch(() => {})
    }
  }

  #schedule(): void {
    if (this.#sendTimer) return
    const wait = Math.max(0, this.#lastSent + SEND_INTERVAL_MS - Date.now())
    this.#sendTimer = setTimeout(() => {
      this.#sendTimer = undefined
      this.#lastSent = Date.now()
      void this.#post()
    }, wait)
  }

  async #post(): Promise<void> {
    if (!this.#state || this.host.transport.reachable === false) return
    // Only the newest state matters: a post still retrying is replaced.
    this.#send?.abort()
    const abort = new AbortController()
    this.#send = abort
    try {
      const r = await this.host.transport.fetch(`${this.host.url}/v1/presence`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ room: this.room, client_id: this.host.clientId, state: this.#state }),
        signal: abort.signal,
      })
      if (!r.ok) {
        console.warn(`[ferrite] presence in ${this.room}: ${r.status} ${await r.text()}`)
        return
      }
      const { member } = (await r.json()) as { member?: string }
      if (member && member !== this.#self) {
        // Members seen before this answer are flagged anew now that this client knows its id.
        this.#self = member
        this.#members = this.#members.map((m) => ({ ...m, self: m.member === member }))
        this.events.emit('change', this.#members)
      }
    } catch (e) {
      // Best effort: the next heartbeat sends the state again. (Aborts come as the client's
      // AbortedError or, from fetch itself, as a DOMException named AbortError.)
      if (e instanceof AbortedError || (e as Error | undefined)?.name === 'AbortError') return
      console.warn(`[ferrite] presence in ${this.room}:`, e)
    }
  }

  #setMembers(raw: { member: string; subject?: string; state: Record<string, unknown>; updated_at: number }[]): void {
    this.#members = raw.map((m) => ({
      member: m.member,
      subject: m.subject,
      state: m.state ?? {},
      updatedAt: m.updated_at,
      self: m.member === this.#self,
    }))
    this.events.emit('change', this.#members)
  }

  async #watchLoop(signal: AbortSignal): Promise<void> {
    let failures = 0
    while (!signal.aborted) {
      try {
        const url = `${this.host.url}/v1/presence?room=${encodeURIComponent(this.room)}&live_sse=true`
        const r = await this.host.transport.fetch(url, { signal, headers: { accept: 'text/event-stream' } })
        if (!r.ok || !r.body) {
          console.warn(`[ferrite] watching presence in ${this.room}: ${r.status} ${await r.text()}`)
          await this.host.transport.backoff(failures++, signal)
          continue
        }
        failures = 0
        const reader = r.body.pipeThrough(new TextDecoderStream()).getReader()
        let buffer = ''
        for (;;) {
          const { value, done } = await reader.read()
          if (done) break
          buffer += value
          let end: number
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const event = buffer.slice(0, end)
            buffer = buffer.slice(end + 2)
            const data = event
              .split('\n')
              .filter((l) => l.startsWith('data:'))
              .map((l) => l.slice(5).trimStart())
              .join('\n')
            if (data) this.#setMembers((JSON.parse(data) as { members: never[] }).members)
          }
        }
      } catch (e) {
        if (signal.aborted || e instanceof AbortedError) return
        // The stream broke (network gone): the transport waits for it to come back.
        if (this.#members.length > 0) this.#setMembers([])
        await this.host.transport.backoff(failures++, signal).catch(() => {})
      }
    }
  }
}
