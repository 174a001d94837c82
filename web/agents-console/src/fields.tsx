/**
 * Inputs that edit one column of a synced row. While the user types, the input holds their
 * draft; otherwise it shows the row's value — so a change made on another device (or by the
 * agent runner) appears at once in a field nobody is editing, and never overwrites one that is
 * being edited. Text commits on blur or Enter (Escape reverts); numbers and choices on change.
 */

import { useState, type FormEvent, type KeyboardEvent } from 'react'

interface TextProps {
  value: string
  /** Called with the new text when it differs from `value` (trimmed). */
  onCommit: (text: string) => void
  field: string
  label: string
  className?: string
  /** Empty text is not committed (the field goes back to the row's value). */
  required?: boolean
  maxLength?: number
  placeholder?: string
}

/** A one-line text field (see the module docs). */
export function CommitText({ value, onCommit, field, label, className, required = true, maxLength, placeholder }: TextProps) {
  const [draft, setDraft] = useState<string | null>(null)
  const commit = () => {
    if (draft === null) return
    const text = draft.trim()
    setDraft(null)
    if (text === value || (required && text === '')) return
    onCommit(text)
  }
  const onKeyDown = (e: KeyboardEvent<HTMLInputElement>) => {
    if (e.key === 'Enter') {
      e.preventDefault()
      commit()
    } else if (e.key === 'Escape') {
      setDraft(null)
    }
  }
  return (
    <input
      type="text"
      className={className}
      data-field={field}
      aria-label={label}
      value={draft ?? value}
      maxLength={maxLength}
      placeholder={placeholder}
      onChange={(e) => setDraft(e.target.value)}
      onBlur={commit}
      onKeyDown={onKeyDown}
    />
  )
}

/** A multi-line text field: commits on blur (Enter starts a new line; Escape reverts). */
export function CommitTextArea({ value, onCommit, field, label, className, required = false, maxLength, placeholder, rows = 3 }: TextProps & { rows?: number }) {
  const [draft, setDraft] = useState<string | null>(null)
  const commit = () => {
    if (draft === null) return
    const text = draft.trim()
    setDraft(null)
    if (text === value.trim() || (required && text === '')) return
    onCommit(text)
  }
  return (
    <textarea
      className={className}
      data-field={field}
      aria-label={label}
      rows={rows}
      value={draft ?? value}
      maxLength={maxLength}
      placeholder={placeholder}
      onChange={(e) => setDraft(e.target.value)}
      onBlur={commit}
      onKeyDown={(e) => {
        if (e.key === 'Escape') setDraft(null)
      }}
    />
  )
}

/**
 * A whole number in `min`…`max`: commits every valid change (spinner, typing); while the text is
 * not a valid number it stays a draft, and leaving the field shows the row's value again.
 */
export function CommitNumber({ value, onCommit, field, label, min, max, className }: { value: number; onCommit: (n: number) => void; field: string; label: string; min: number; max: number; className?: string }) {
  const [draft, setDraft] = useState<string | null>(null)
  return (
    <input
      type="number"
      className={className}
      data-field={field}
      aria-label={label}
      min={min}
      max={max}
      step={1}
      value={draft ?? String(value)}
      onChange={(e) => {
        const text = e.target.value
        setDraft(text)
        const n = Number(text)
        if (text.trim() !== '' && Number.isInteger(n) && n >= min && n <= max && n !== value) onCommit(n)
      }}
      onBlur={() => setDraft(null)}
      onKeyDown={(e) => {
        // Enter or Escape: done typing — show the row's value (the committed one) again.
        if (e.key === 'Enter' || e.key === 'Escape') setDraft(null)
      }}
    />
  )
}

/**
 * A one-field form that adds a named row: `onAdd` gets the trimmed name; an empty name shows
 * `required` under the field and adds nothing.
 */
export function NameForm(props: {
  label: string
  placeholder: string
  button: string
  required: string
  inputTestId: string
  buttonTestId: string
  onAdd: (name: string) => void
}) {
  const [name, setName] = useState('')
  const [error, setError] = useState('')
  const submit = (e: FormEvent) => {
    e.preventDefault()
    const n = name.trim()
    if (!n) {
      setError(props.required)
      return
    }
    setError('')
    props.onAdd(n)
    setName('')
  }
  return (
    <form className="card inline-form" onSubmit={submit} noValidate>
      <label className="grow">
        <span>{props.label}</span>
        <input
          type="text"
          data-testid={props.inputTestId}
          value={name}
          maxLength={200}
          placeholder={props.placeholder}
          onChange={(e) => {
            setName(e.target.value)
            if (error) setError('')
          }}
        />
      </label>
      <button type="submit" className="primary" data-testid={props.buttonTestId}>
        {props.button}
      </button>
      <p className="field-error" role="alert">
        {error}
      </p>
    </form>
  )
}
