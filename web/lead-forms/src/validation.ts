/**
 * The lead form's rules — the same as the server's CHECK constraints on `leads`, so a lead the
 * form lets through is one the server keeps — and the words for each, also used to explain a
 * lead the server refused (its rejection names the constraint).
 */

export type Field = 'name' | 'email' | 'phone' | 'message'

/** What the visitor typed. */
export interface LeadInput {
  name: string
  email: string
  phone: string
  message: string
}

export const FIELD_LABELS: Record<Field, string> = {
  name: 'Name',
  email: 'Email',
  phone: 'Phone',
  message: 'Message',
}

export const MESSAGES = {
  nameShort: 'Please enter your name (at least 2 characters).',
  nameLong: 'Please shorten your name to 200 characters or fewer.',
  email: 'Please enter a valid email address.',
  phone: 'Phone numbers may contain digits, spaces, + ( ) and - (6–20 characters).',
  messageShort: 'Please write a message of at least 10 characters.',
  messageLong: 'Please shorten your message to 5,000 characters or fewer.',
} as const

/** The server's constraints on leads, and what each one means for the visitor. */
const CONSTRAINTS: Record<string, { field: Field; text: string }> = {
  leads_name_check: { field: 'name', text: MESSAGES.nameShort },
  leads_name_length: { field: 'name', text: MESSAGES.nameLong },
  leads_email_check: { field: 'email', text: MESSAGES.email },
  leads_phone_check: { field: 'phone', text: MESSAGES.phone },
  leads_message_check: { field: 'message', text: MESSAGES.messageShort },
  leads_message_length: { field: 'message', text: MESSAGES.messageLong },
}

/** Length in characters, as Postgres counts them (not UTF-16 units). */
const length = (s: string) => [...s].length

const EMAIL = /^[^\s@]+@[^\s@]+\.[^\s@]+$/
const PHONE = /^[0-9 +()-]{6,20}$/

/** The input as it is sent: surrounding spaces dropped. */
export function normalize(input: LeadInput): LeadInput {
  return { name: input.name.trim(), email: input.email.trim(), phone: input.phone.trim(), message: input.message.trim() }
}

/** What is wrong with each field (none: the lead may be queued). */
export function validate(input: LeadInput): Partial<Record<Field, string>> {
  const v = normalize(input)
  const errors: Partial<Record<Field, string>> = {}
  if (length(v.name) < 2) errors.name = MESSAGES.nameShort
  else if (length(v.name) > 200) errors.name = MESSAGES.nameLong
  if (!EMAIL.test(v.email)) errors.email = MESSAGES.email
  if (v.phone !== '' && !PHONE.test(v.phone)) errors.phone = MESSAGES.phone
  if (length(v.message) < 10) errors.message = MESSAGES.messageShort
  else if (length(v.message) > 5000) errors.message = MESSAGES.messageLong
  return errors
}

/** A server refusal in words: the field and its message when a known constraint is named. */
export interface Explained {
  text: string
  field?: Field
  constraint?: string
}

export function explainRejection(code: string | null | undefined, message: string | null | undefined): Explained {
  const m = message ?? ''
  const named = /constraint "([^"]+)"/.exec(m)?.[1] ?? Object.keys(CONSTRAINTS).find((c) => m.includes(c))
  const known = named ? CONSTRAINTS[named] : undefined
  if (known) return { text: known.text, field: known.field, constraint: named }
  if (code === 'forbidden') return { text: `This site did not accept the message (${m || 'not allowed'}).` }
  if (code === 'too_large') return { text: 'This message is too large to send.' }
  return { text: m ? `The site did not accept this message: ${m}` : 'The site did not accept this message.', constraint: named }
}
