/**
 * `@ferrite/react`: React bindings for `@ferrite/client`.
 *
 * - {@link FerriteProvider} opens (or is given) the client; {@link useFerrite} reaches it.
 * - Reads: {@link useShape}, {@link useLiveQuery} (include trees' members are shapes too).
 * - Writes: {@link useMutation} (optimistic, with the rejection reason and merges), {@link useReapply}.
 * - Status: {@link useSyncStatus}, {@link useOfflineState}, {@link useConnection}; presence: {@link usePresence}.
 * - Components: {@link ConnectionStatus}, {@link SyncButton}, {@link OfflineIndicator}.
 */

export { FerriteProvider, useFerrite } from './provider.js'
export type { FerriteProviderProps } from './provider.js'
export { useShape, useLiveQuery, useSyncStatus, useOfflineState, useConnection, useMutation, useReapply, usePresence } from './hooks.js'
export type { Mutations } from './hooks.js'
export type { ShapeSnapshot } from './store.js'
export { ConnectionStatus, SyncButton, OfflineIndicator } from './components.js'
