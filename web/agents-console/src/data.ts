/**
 * What the console syncs: the shapes (local name → server table and the rows kept on this
 * device) and the row types the client delivers for them. The time windows are the console's
 * local retention: the server takes rows out of a shape as they age out, so the device drops
 * them while Postgres keeps them.
 */

import type { ShapeOptions, Value } from '@ferrite/client'

/** The shapes, by local name. */
export const SHAPES = {
  users: { table: 'users', live: false },
  tasks: { table: 'tasks' },
  environments: { table: 'environments' },
  executions: { table: 'agent_executions', where: "created_at > now() - interval '30 days'" },
  events: { table: 'observability_events', where: "at > now() - interval '7 days'" },
  memory: { table: 'agent_memory', where: 'expires_at IS NULL OR expires_at > now()' },
  workflows: { table: 'workflows' },
  workflow_runs: { table: 'workflow_executions' },
} satisfies Record<string, ShapeOptions>

/** A local shape name. */
export type ShapeName = keyof typeof SHAPES

/** The local shape name of server table `table`, if the console syncs it. */
export function shapeOfTable(table: string): ShapeName | undefined {
  return (Object.keys(SHAPES) as ShapeName[]).find((s) => SHAPES[s].table === table)
}

/** Timestamps arrive as Postgres text (`2025-01-31 12:00:00.123456+00`); the console writes ISO. */
export type Timestamp = string

export interface User {
  id: string
  name: string
  email: string
  avatar_url: string | null
  color: string
  role: 'admin' | 'member'
}

export type TaskStatus = 'todo' | 'running' | 'done' | 'failed'

export interface Task {
  id: string
  owner_id: string
  environment_id: string | null
  title: string
  description: string
  status: TaskStatus
  priority: number
  created_at: Timestamp
  updated_at: Timestamp
}

export interface Environment {
  id: string
  owner_id: string
  name: string
  config: Value
  is_active: boolean
  updated_at: Timestamp
}

export type RunStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled'

export interface Execution {
  id: string
  owner_id: string
  task_id: string | null
  agent: string
  status: RunStatus
  created_at: Timestamp
  started_at: Timestamp | null
  finished_at: Timestamp | null
}

export type EventLevel = 'debug' | 'info' | 'warn' | 'error'

export interface ObservabilityEvent {
  id: string
  owner_id: string
  execution_id: string
  level: EventLevel
  message: string
  at: Timestamp
}

export interface Memory {
  id: string
  owner_id: string
  agent: string
  content: string
  importance: number
  last_accessed_at: Timestamp
  expires_at: Timestamp | null
  updated_at: Timestamp
}

export interface Workflow {
  id: string
  name: string
  description: string
  /** `{"steps": ["task title", …]}` */
  definition: Value
  updated_at: Timestamp
}

export interface WorkflowRun {
  id: string
  owner_id: string
  workflow_id: string
  status: RunStatus
  started_at: Timestamp
  finished_at: Timestamp | null
}

/** The words the console uses for a task's status. */
export const TASK_STATUS_LABELS: Record<TaskStatus, string> = {
  todo: 'Pending',
  running: 'In progress',
  done: 'Completed',
  failed: 'Failed',
}

/** The words the console uses for a run's status. */
export const RUN_STATUS_LABELS: Record<RunStatus, string> = {
  queued: 'Queued',
  running: 'Running',
  succeeded: 'Succeeded',
  failed: 'Failed',
  cancelled: 'Cancelled',
}

/** Whether a run can still be cancelled. */
export function isCancellable(status: string): boolean {
  return status === 'queued' || status === 'running'
}

/** The step titles of a workflow definition (anything malformed counts as no steps). */
export function stepsOf(definition: Value): string[] {
  if (typeof definition !== 'object' || definition === null || Array.isArray(definition)) return []
  const steps = definition.steps
  return Array.isArray(steps) ? steps.filter((s): s is string => typeof s === 'string') : []
}

/** The current time as the console writes timestamps. */
export function nowIso(): string {
  return new Date().toISOString()
}
