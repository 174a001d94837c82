/**
 * Staff sign-in. Under `ferrite dev` a staff member picks themselves from the tenant's people
 * (`GET /dev/users`) and the server issues real, short-lived JWTs for them (`POST /dev/token`,
 * role `staff`, their tenant). Who is signed in to a tenant's inbox on this device is remembered
 * in localStorage as `{id, name, tenant_id}` only — never a token, never a lead.
 */

import type { Tenant } from './tenants.js'

/** A staff member one can sign in as (from `GET /dev/users`). */
export interface StaffUser {
  id: string
  name: string
  email: string
  avatar_url: string | null
  color: string
  tenant_id: string
  tenant_slug: string
  tenant_name: string
}

/** The signed-in staff member, as remembered. */
export interface SignedInStaff {
  id: string
  name: string
  tenant_id: string
}

const key = (tenantId: string) => `lead-forms:staff:${tenantId}`

/** Who is signed in to `tenant`'s inbox on this device, if anyone (a damaged entry counts as no one). */
export function rememberedStaff(tenant: Pick<Tenant, 'id'>): SignedInStaff | undefined {
  try {
    const v = JSON.parse(localStorage.getItem(key(tenant.id)) ?? 'null') as Partial<SignedInStaff> | null
    if (!v || typeof v.id !== 'string' || typeof v.name !== 'string' || v.tenant_id !== tenant.id) return undefined
    return { id: v.id, name: v.name, tenant_id: v.tenant_id }
  } catch {
    return undefined
  }
}

/** Remembers `u` as signed in to their tenant's inbox. */
export function rememberStaff(u: Pick<StaffUser, 'id' | 'name' | 'tenant_id'>): SignedInStaff {
  const kept: SignedInStaff = { id: u.id, name: u.name, tenant_id: u.tenant_id }
  localStorage.setItem(key(u.tenant_id), JSON.stringify(kept))
  return kept
}

export function forgetStaff(tenantId: string): void {
  localStorage.removeItem(key(tenantId))
}

/** A staff member's local database: one per tenant and person. */
export const staffDatabase = (tenantId: string, userId: string) => `lead-forms-${tenantId}-staff-${userId}`

/** Initials for an avatar. */
export function initials(name: string): string {
  const parts = name.trim().split(/\s+/).filter(Boolean)
  return ((parts[0]?.[0] ?? '?') + (parts.length > 1 ? (parts[parts.length - 1]![0] ?? '') : '')).toUpperCase()
}
