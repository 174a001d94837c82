/**
 * The tenants — each one a business with its own site — as the server lists them
 * (`GET /dev/tenants`, public). The list is kept in localStorage (names, colours and taglines:
 * public, nothing about any visitor), so that a site visited once opens offline: its tenant's id
 * names the local database.
 */

import { useEffect, useState } from 'react'

export interface Tenant {
  id: string
  slug: string
  name: string
  brand_color: string
  tagline: string
}

const KEY = 'lead-forms:tenants'

function isTenant(v: unknown): v is Tenant {
  const t = v as Partial<Tenant> | null
  return !!t && typeof t.id === 'string' && typeof t.slug === 'string' && typeof t.name === 'string'
}

function clean(t: Tenant): Tenant {
  return {
    id: t.id,
    slug: t.slug,
    name: t.name,
    brand_color: typeof t.brand_color === 'string' ? t.brand_color : '',
    tagline: typeof t.tagline === 'string' ? t.tagline : '',
  }
}

/** The tenants last listed on this device (empty if never, or if the entry is damaged). */
export function cachedTenants(): Tenant[] {
  try {
    const v: unknown = JSON.parse(localStorage.getItem(KEY) ?? '[]')
    return Array.isArray(v) ? v.filter(isTenant).map(clean) : []
  } catch {
    return []
  }
}

/** The server's list of tenants (kept for offline use). Rejects offline or on an error answer. */
export async function fetchTenants(): Promise<Tenant[]> {
  const r = await fetch('/dev/tenants', { cache: 'no-store' })
  if (!r.ok) throw new Error(`the server answered ${r.status} for the list of sites`)
  const body: unknown = await r.json()
  const list = Array.isArray(body) ? body.filter(isTenant).map(clean) : []
  try {
    localStorage.setItem(KEY, JSON.stringify(list))
  } catch {
    /* storage full or disabled: the list is just not kept */
  }
  return list
}

/** What a page knows of the tenants: the server's list, or the kept one while it is unreachable. */
export interface TenantList {
  tenants: Tenant[] | undefined
  /** Whether `tenants` is the server's answer (not only the kept list). */
  fresh: boolean
  /** Why the server's list could not be had. */
  error: string | undefined
}

export function useTenants(): TenantList {
  const [state, setState] = useState<TenantList>(() => {
    const kept = cachedTenants()
    return { tenants: kept.length > 0 ? kept : undefined, fresh: false, error: undefined }
  })
  useEffect(() => {
    let live = true
    fetchTenants().then(
      (tenants) => live && setState({ tenants, fresh: true, error: undefined }),
      (e: unknown) => {
        if (!live) return
        const offline = e instanceof TypeError
        setState((s) => ({ ...s, error: offline ? 'offline' : e instanceof Error ? e.message : String(e) }))
      },
    )
    return () => {
      live = false
    }
  }, [])
  return state
}

/** One tenant by slug: found, not (yet) known, or not known and the server cannot be asked. */
export type TenantLookup =
  | { state: 'found'; tenant: Tenant }
  | { state: 'loading' }
  | { state: 'missing' }
  | { state: 'unavailable'; reason: string }

export function useTenant(slug: string): TenantLookup {
  const list = useTenants()
  const tenant = list.tenants?.find((t) => t.slug === slug)
  if (tenant) return { state: 'found', tenant }
  if (list.fresh) return { state: 'missing' }
  if (list.error) return { state: 'unavailable', reason: list.error }
  return { state: 'loading' }
}

/** The tenant's brand colour if it is a plain hex colour (anything else is not put in CSS). */
export function brandColor(t: Pick<Tenant, 'brand_color'>): string {
  return /^#([0-9a-f]{3}|[0-9a-f]{6})$/i.test(t.brand_color) ? t.brand_color : '#2563eb'
}

/** Black or white, whichever reads better on `hex`. */
export function inkOn(hex: string): string {
  const h = hex.length === 4 ? hex.replace(/^#(.)(.)(.)$/, '#$1$1$2$2$3$3') : hex
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16) / 255).map((c) => (c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4))
  const luminance = 0.2126 * r! + 0.7152 * g! + 0.0722 * b!
  return luminance > 0.45 ? '#0f172a' : '#ffffff'
}
