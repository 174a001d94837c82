/** Formatting the example apps share. */

/** A byte count in decimal units: "1 byte", "950 bytes", "1.2 MB", "37 MB"; "—" when unknown. */
export function formatBytes(n: number): string {
  if (!Number.isFinite(n) || n < 0) return '—'
  const units = ['bytes', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  let v = n
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000
    i++
  }
  return i === 0 ? `${v} ${v === 1 ? 'byte' : 'bytes'}` : `${v < 10 ? v.toFixed(1) : Math.round(v)} ${units[i]}`
}
