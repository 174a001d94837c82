/**
 * The sync indicator, as the seed draws it: online or offline, what is waiting on this device,
 * sending, sent, or failed with a Retry button. `data-state` is one of `online` (connected,
 * nothing of ours to send yet), `offline`, `syncing` (sending what waits), `synced` (nothing
 * waits, caught up), `failed` (the sync keeps failing: the reason, and Retry); `data-pending` is
 * how many changes wait on this device.
 */

import type { SyncStatus } from '@ferrite/client'
import { useSyncStatus } from '@ferrite/react'
import { useEffect, useState } from 'react'
import { count } from '../format.js'

export type IndicatorState = 'online' | 'offline' | 'syncing' | 'synced' | 'failed'

export function indicatorState(s: SyncStatus): IndicatorState {
  switch (s.state) {
    case 'error':
      return 'failed'
    case 'offline':
      return 'offline'
    case 'synced':
      return 'synced'
    case 'syncing':
      return s.pending > 0 ? 'syncing' : 'online'
  }
}

/** How the indicator names what waits: "message" / "messages" on a site, "change(s)" in the inbox. */
export interface IndicatorWords {
  one: string
  many: string
  /** Shown when synced. */
  synced: string
}

function Dot({ state }: { state: IndicatorState }) {
  return <span className={`dot dot-${state}`} aria-hidden="true" />
}

/** The indicator of the page's client (inside its FerriteProvider). */
export function SyncIndicator({ words }: { words: IndicatorWords }) {
  const s = useSyncStatus()
  const state = indicatorState(s)
  const waiting = s.pending > 0 ? count(s.pending, words.one, words.many) : ''
  let text: string
  switch (state) {
    case 'online':
      text = 'Online'
      break
    case 'offline':
      text = waiting ? `Offline — ${waiting} waiting on this device` : 'Offline'
      break
    case 'syncing':
      text = `Online — sending ${waiting}…`
      break
    case 'synced':
      text = words.synced
      break
    case 'failed':
      text = waiting ? `Sync failed — ${waiting} waiting on this device` : 'Sync failed'
      break
  }
  return (
    <div className={`sync-indicator state-${state}`} data-testid="sync-indicator" data-state={state} data-pending={s.pending} role="status" aria-live="polite">
      <Dot state={state} />
      <span className="sync-text">{text}</span>
      {state === 'failed' && (
        <>
          <span className="sync-reason" title={s.state === 'error' ? s.reason : undefined}>
            {s.state === 'error' ? s.reason : ''}
          </span>
          <button type="button" className="retry" data-testid="retry" onClick={s.retry}>
            Retry
          </button>
        </>
      )}
    </div>
  )
}

/** Whether the browser says it is online, following its events. */
export function useBrowserOnline(): boolean {
  const [online, setOnline] = useState(() => navigator.onLine !== false)
  useEffect(() => {
    const on = () => setOnline(true)
    const off = () => setOnline(false)
    window.addEventListener('online', on)
    window.addEventListener('offline', off)
    return () => {
      window.removeEventListener('online', on)
      window.removeEventListener('offline', off)
    }
  }, [])
  return online
}

/** The indicator before the page's client is open: only online or offline. */
export function StaticIndicator() {
  const online = useBrowserOnline()
  const state: IndicatorState = online ? 'online' : 'offline'
  return (
    <div className={`sync-indicator state-${state}`} data-testid="sync-indicator" data-state={state} data-pending={0} role="status" aria-live="polite">
      <Dot state={state} />
      <span className="sync-text">{online ? 'Online' : 'Offline'}</span>
    </div>
  )
}
