/**
 * What the browser tests (and a curious developer's console) reach: `window.leadForms` — the
 * page's client, its PGlite database (`db`, the PGliteWorker), the database's name, and the app's
 * part (a site's journal of this device's leads) — and `<html data-ready="true">` once the page
 * is usable.
 */

import type { PGliteWorker } from '@electric-sql/pglite/worker'
import type { FerriteClient } from '@ferrite/client'
import { useEffect } from 'react'

declare global {
  interface Window {
    leadForms?: { client: FerriteClient; db: PGliteWorker; database: string; app: unknown }
  }
}

/** Exposes `local` while it is open. */
export function useExposeClient(local: { client: FerriteClient; db: PGliteWorker; database: string; app: unknown } | undefined): void {
  useEffect(() => {
    if (!local) return
    window.leadForms = { client: local.client, db: local.db, database: local.database, app: local.app }
    return () => {
      if (window.leadForms?.client === local.client) delete window.leadForms
    }
  }, [local])
}

/** Marks the page ready while `ready` holds. */
export function useReady(ready: boolean): void {
  useEffect(() => {
    if (!ready) return
    document.documentElement.dataset.ready = 'true'
    return () => {
      delete document.documentElement.dataset.ready
    }
  }, [ready])
}
