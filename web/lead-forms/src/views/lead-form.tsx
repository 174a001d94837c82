/**
 * The lead form: name, email, phone (optional), message. Checked here with the server's rules
 * (validation.ts) before anything is queued — each field says what is wrong — unless the page
 * was opened with `?novalidate=1`, which sends whatever was typed (to see the server's reasons).
 */

import { useId, useRef, useState, type FormEvent } from 'react'
import { FIELD_LABELS, validate, type Field, type LeadInput } from '../validation.js'

const EMPTY: LeadInput = { name: '', email: '', phone: '', message: '' }
const ORDER: Field[] = ['name', 'email', 'phone', 'message']

/** What became of a submission: queued (the form empties), or not (the form keeps the input). */
export type SubmitOutcome = 'queued' | 'not-queued'

export function LeadForm({
  initial,
  editing,
  skipValidation,
  onSubmit,
  onCancelEdit,
}: {
  initial?: LeadInput
  /** The form holds a refused lead being corrected. */
  editing: boolean
  skipValidation: boolean
  onSubmit: (input: LeadInput) => Promise<SubmitOutcome>
  onCancelEdit: () => void
}) {
  const [values, setValues] = useState<LeadInput>(initial ?? EMPTY)
  const [errors, setErrors] = useState<Partial<Record<Field, string>>>({})
  const [busy, setBusy] = useState(false)
  const id = useId()
  const inputs = useRef<Partial<Record<Field, HTMLInputElement | HTMLTextAreaElement | null>>>({})

  const set = (field: Field, value: string) => {
    const next = { ...values, [field]: value }
    setValues(next)
    // A field that was wrong says so until it is right (and no sooner for the others).
    if (errors[field]) setErrors((e) => ({ ...e, [field]: validate(next)[field] }))
  }

  const submit = async (e: FormEvent) => {
    e.preventDefault()
    if (busy) return
    if (!skipValidation) {
      const found = validate(values)
      setErrors(found)
      const first = ORDER.find((f) => found[f])
      if (first) {
        inputs.current[first]?.focus()
        return
      }
    }
    setBusy(true)
    const submitted = values
    try {
      const outcome = await onSubmit(submitted)
      if (outcome === 'queued') {
        // Emptied for the next message — unless the visitor already started it.
        setValues((now) => (now === submitted ? EMPTY : now))
        setErrors({})
      }
    } finally {
      setBusy(false)
    }
  }

  const field = (f: Field, props: { type?: string; autoComplete?: string; optional?: boolean; multiline?: boolean; hint?: string }) => {
    const error = errors[f]
    const errorId = `${id}-${f}-error`
    const common = {
      id: `${id}-${f}`,
      name: f,
      value: values[f],
      'data-testid': `lead-${f}`,
      'aria-invalid': error ? true : undefined,
      'aria-describedby': error ? errorId : undefined,
      ref: (el: HTMLInputElement | HTMLTextAreaElement | null) => {
        inputs.current[f] = el
      },
    }
    return (
      <div className={`field${error ? ' invalid' : ''}`}>
        <label htmlFor={common.id}>
          {FIELD_LABELS[f]}
          {props.optional && <span className="optional"> (optional)</span>}
        </label>
        {props.multiline ? (
          <textarea {...common} rows={5} onChange={(e) => set(f, e.target.value)} />
        ) : (
          <input {...common} type={props.type ?? 'text'} autoComplete={props.autoComplete} onChange={(e) => set(f, e.target.value)} />
        )}
        {props.hint && !error && <p className="hint">{props.hint}</p>}
        {error && (
          <p className="field-error" id={errorId} data-testid={`error-${f}`} role="alert">
            {error}
          </p>
        )}
      </div>
    )
  }

  return (
    <form className="lead-form" data-testid="lead-form" noValidate onSubmit={(e) => void submit(e)} aria-busy={busy}>
      {editing && (
        <p className="editing-note" data-testid="lead-editing">
          You are correcting a message the site did not accept. Send it again when it is right.{' '}
          <button type="button" className="link" onClick={onCancelEdit}>
            Cancel
          </button>
        </p>
      )}
      {field('name', { autoComplete: 'name' })}
      {field('email', { type: 'email', autoComplete: 'email' })}
      {field('phone', { type: 'tel', autoComplete: 'tel', optional: true })}
      {field('message', { multiline: true, hint: 'At least 10 characters.' })}
      <div className="form-actions">
        <button type="submit" className="primary brand" data-testid="lead-submit" disabled={busy}>
          {busy ? 'Saving…' : editing ? 'Send again' : 'Send message'}
        </button>
        {skipValidation && <span className="muted small">Checks in this page are off (novalidate): the site checks the message.</span>}
      </div>
    </form>
  )
}
