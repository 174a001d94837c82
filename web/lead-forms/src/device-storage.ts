/**
 * This device's storage for the site: asks the browser to keep it (`navigator.storage.persist()`:
 * not cleared when space runs low), shows how much is used of how much may be, and tells the
 * form when there is no room for another lead (more than 90% of the quota used, or less than
 * 1 MiB left) — then the new lead is refused, with words, rather than half-saved, and the leads
 * already queued stay.
 */

import { useCallback, useEffect, useState } from 'react'

/** Less than this left, or more than {@link FULL} of the quota used: no new lead. */
export const MIN_FREE_BYTES = 1024 * 1024
export const FULL = 0.9

export const QUOTA_REFUSED = 'This device is out of storage space: your message was not saved. Earlier messages are kept and will still be sent.'

export interface StorageEstimateInfo {
  usage: number
  quota: number
}

/** The browser's estimate, or undefined where it has none. */
export async function estimate(): Promise<StorageEstimateInfo | undefined> {
  if (typeof navigator === 'undefined' || !navigator.storage?.estimate) return undefined
  try {
    const e = await navigator.storage.estimate()
    return { usage: e.usage ?? 0, quota: e.quota ?? 0 }
  } catch {
    return undefined
  }
}

/** Whether an estimate leaves room for a new lead. */
export function hasRoom(e: StorageEstimateInfo | undefined): boolean {
  if (!e || e.quota <= 0) return true
  return e.usage / e.quota <= FULL && e.quota - e.usage >= MIN_FREE_BYTES
}

/**
 * Whether `bytes` more fit in the site's storage, found by trying: a blob of that size is put in
 * a cache of its own and deleted again (the entry, not the cache: that frees the space at once).
 * The estimate alone cannot say: Chromium reports the quota as the usage plus a fixed amount (so
 * that it tells nothing about the device), whatever the real limit is. Undefined where it cannot
 * be tried.
 */
export async function probeRoom(bytes = MIN_FREE_BYTES): Promise<boolean | undefined> {
  if (typeof caches === 'undefined') return undefined
  let cache: Cache
  try {
    cache = await caches.open('lead-forms-room-probe')
  } catch (e) {
    return isQuotaError(e) ? false : undefined
  }
  try {
    await cache.put('/room-probe', new Response(new Uint8Array(bytes)))
    return true
  } catch (e) {
    return isQuotaError(e) ? false : undefined
  } finally {
    await cache.delete('/room-probe').catch(() => false)
  }
}

/**
 * Whether a new lead may be saved: the estimate leaves room (at most {@link FULL} used, at least
 * {@link MIN_FREE_BYTES} left), and that much can really be stored.
 */
export async function roomForLead(): Promise<boolean> {
  if (!hasRoom(await estimate())) return false
  return (await probeRoom()) !== false
}

/** Whether an error is the browser refusing to store more. */
export function isQuotaError(e: unknown): boolean {
  const text = e instanceof Error ? `${e.name} ${e.message}` : String(e)
  return /quota|QuotaExceeded|no space|disk full|ENOSPC/i.test(text)
}

export interface DeviceStorage {
  estimate: StorageEstimateInfo | undefined
  /** `persist()`'s answer: true when the browser will keep the data; undefined until asked (or unsupported). */
  persisted: boolean | undefined
  refresh: () => void
}

/** Asks for persistent storage once, and follows the estimate (every 15 s and on `refresh`). */
export function useDeviceStorage(): DeviceStorage {
  const [info, setInfo] = useState<StorageEstimateInfo | undefined>(undefined)
  const [persisted, setPersisted] = useState<boolean | undefined>(undefined)
  const refresh = useCallback(() => {
    void estimate().then(setInfo)
  }, [])
  useEffect(() => {
    let live = true
    const storage = typeof navigator !== 'undefined' ? navigator.storage : undefined
    if (storage?.persist) {
      ;(async () => {
        const already = storage.persisted ? await storage.persisted() : false
        return already || (await storage.persist())
      })().then(
        (p) => live && setPersisted(p),
        () => live && setPersisted(false),
      )
    }
    refresh()
    const timer = setInterval(refresh, 15_000)
    return () => {
      live = false
      clearInterval(timer)
    }
  }, [refresh])
  return { estimate: info, persisted, refresh }
}
