/**
 * Ready-made status components, as the seeds' apps show them: the connection status, a sync
 * button (retry now), an offline indicator with the pending count. Unstyled: each renders
 * semantic elements with a `data-state` attribute and class names to style.
 */

import { useConnection, useOfflineState, useSyncStatus } from './hooks.js'

/** "Connected" / "Connecting…" / "Disconnected". */
export function ConnectionStatus({ className = 'ferrite-connection' }: { className?: string }) {
  const c = useConnection()
  const text = c === 'connected' ? 'Connected' : c === 'connecting' ? 'Connecting…' : 'Disconnected'
  return (
    <span className={className} data-state={c} role="status">
      {text}
    </span>
  )
}

/**
 * "Sync now": asks the client to retry at once (skipping the backoff), labelled with what the
 * status is — "Synced", "Syncing…", "Offline (3 pending)", "Sync error — retry".
 */
export function SyncButton({ className = 'ferrite-sync' }: { className?: string }) {
  const s = useSyncStatus()
  const label =
    s.state === 'synced'
      ? 'Synced'
      : s.state === 'syncing'
        ? `Syncing…${s.pending ? ` (${s.pending} pending)` : ''}`
        : s.state === 'offline'
          ? `Offline${s.pending ? ` (${s.pending} pending)` : ''} — sync now`
          : 'Sync error — retry'
  return (
    <button type="button" className={className} data-state={s.state} title={s.state === 'error' ? s.reason : undefined} onClick={s.retry}>
      {label}
    </button>
  )
}

/** Shown only while offline: "Working offline", with the number of changes waiting. */
export function OfflineIndicator({ className = 'ferrite-offline' }: { className?: string }) {
  const { isOffline, pendingChanges } = useOfflineState()
  if (!isOffline) return null
  return (
    <div className={className} role="status" data-pending={pendingChanges}>
      Working offline{pendingChanges ? ` — ${pendingChanges} change${pendingChanges === 1 ? '' : 's'} waiting` : ''}
    </div>
  )
}
