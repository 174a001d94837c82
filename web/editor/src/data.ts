/**
 * The editor's data: the shapes it syncs, typed views of their rows, and every change the
 * editor makes, each as one client transaction (so it reaches Postgres whole or not at all).
 */

import type { FerriteClient, Row, ShapeOptions, TreeOptions } from '@ferrite/client'
import { parseTime } from './dom.js'

/**
 * What the editor syncs besides the workspace: the user's teams and their members (for roles
 * and the members panel), and every user's name and avatar (to add members). The server's read
 * rules restrict each table to the teams the user is a member of, following team_members live.
 */
export const SHAPES: Record<string, ShapeOptions> = {
  teams: { table: 'teams' },
  team_members: { table: 'team_members', key: ['team_id', 'user_id'] },
  users: { table: 'users' },
}

/**
 * The workspace, one include tree: every pipeline the user may read (the read rule follows team
 * membership), with its steps and their connections, its comments with their authors, and its
 * versions — the last 10 of the last 30 days, newest first. Its members change together at
 * common points of the server's log, so the editor never shows a connection without its steps;
 * and the whole tree is in IndexedDB, so every pipeline opens offline.
 */
export const TREES: Record<string, TreeOptions> = {
  pipelines: {
    table: 'pipelines',
    include: {
      steps: { include: { connections: {} } },
      comments: { include: { comment_authors: { table: 'users' } } },
      versions: {
        table: 'pipeline_versions',
        where: "created_at > now() - interval '30 days'",
        limit: 10,
        orderBy: [{ column: 'created_at', desc: true }],
      },
    },
  },
}

/** A member's role in a team: owners manage members, editors edit, viewers only look. */
export type Role = 'owner' | 'editor' | 'viewer'

export interface Member {
  team_id: string
  user_id: string
  role: Role
}

export interface User {
  id: string
  name: string
  avatar_url: string | null
  color: string
}
export interface Team {
  id: string
  name: string
}
export interface Pipeline {
  id: string
  team_id: string
  name: string
  description: string | null
}
export interface Step {
  id: string
  pipeline_id: string
  name: string
  type: string
  config: Record<string, unknown>
  position: number
  x: number
  y: number
}
export interface Connection {
  id: string
  pipeline_id: string
  from_step_id: string
  to_step_id: string
}
export interface Comment {
  id: string
  pipeline_id: string
  step_id: string | null
  user_id: string
  body: string
  created_at: string
}
export interface Version {
  id: string
  pipeline_id: string
  version_number: number
  snapshot: Snapshot
  created_by: string | null
  created_at: string
}
/** What a saved version holds. */
export interface Snapshot {
  steps: Omit<Step, 'pipeline_id'>[]
  connections: Omit<Connection, 'pipeline_id'>[]
}

const as = <T>(rows: Row[]) => rows as unknown as T[]

/** Read access to the synced rows. */
export class Data {
  constructor(readonly client: FerriteClient) {}

  users(): User[] {
    return as<User>(this.client.rows('users'))
  }
  user(id: string | null | undefined): User | undefined {
    if (!id) return undefined
    return (this.client.get('users', { id }) ?? this.client.get('comment_authors', { id })) as unknown as User | undefined
  }
  teams(): Team[] {
    return as<Team>(this.client.rows('teams')).sort((a, b) => a.name.localeCompare(b.name))
  }
  /** Members of a team, owners first. */
  members(teamId: string): Member[] {
    const order: Record<Role, number> = { owner: 0, editor: 1, viewer: 2 }
    return as<Member>(this.client.rows('team_members'))
      .filter((m) => m.team_id === teamId)
      .sort((a, b) => order[a.role] - order[b.role] || (this.user(a.user_id)?.name ?? '').localeCompare(this.user(b.user_id)?.name ?? ''))
  }
  /** `userId`'s role in a team (undefined: not a member, or not known yet). */
  role(teamId: string, userId: string): Role | undefined {
    return (this.client.get('team_members', { team_id: teamId, user_id: userId }) as unknown as Member | undefined)?.role
  }
  pipelines(): Pipeline[] {
    return as<Pipeline>(this.client.rows('pipelines')).sort((a, b) => a.name.localeCompare(b.name))
  }
  pipeline(id: string): Pipeline | undefined {
    return this.client.get('pipelines', { id }) as unknown as Pipeline | undefined
  }
  steps(pipelineId: string): Step[] {
    return as<Step>(this.client.rows('steps'))
      .filter((s) => s.pipeline_id === pipelineId)
      .sort((a, b) => a.position - b.position || a.id.localeCompare(b.id))
  }
  step(id: string): Step | undefined {
    return this.client.get('steps', { id }) as unknown as Step | undefined
  }
  /** Connections of a pipeline whose two steps both exist (a deleted step takes its edges along). */
  connections(pipelineId: string): Connection[] {
    const steps = new Set(this.steps(pipelineId).map((s) => s.id))
    return as<Connection>(this.client.rows('connections')).filter(
      (c) => c.pipeline_id === pipelineId && steps.has(c.from_step_id) && steps.has(c.to_step_id),
    )
  }
  /** Comments on the pipeline itself (`stepId` null) or on one step, oldest first. */
  comments(pipelineId: string, stepId: string | null): Comment[] {
    return as<Comment>(this.client.rows('comments'))
      .filter((c) => c.pipeline_id === pipelineId && (c.step_id ?? null) === stepId)
      .sort((a, b) => parseTime(a.created_at) - parseTime(b.created_at))
  }
  commentCount(pipelineId: string): Map<string, number> {
    const n = new Map<string, number>()
    for (const c of as<Comment>(this.client.rows('comments'))) {
      if (c.pipeline_id === pipelineId && c.step_id) n.set(c.step_id, (n.get(c.step_id) ?? 0) + 1)
    }
    return n
  }
  /**
   * The versions the editor lists: the last 10 from the last 30 days, newest first (the tree's
   * `versions` include holds exactly those).
   */
  recentVersions(pipelineId: string): Version[] {
    return as<Version>(this.client.rows('versions'))
      .filter((v) => v.pipeline_id === pipelineId)
      .sort((a, b) => parseTime(b.created_at) - parseTime(a.created_at) || b.version_number - a.version_number)
  }
}

const nowIso = () => new Date().toISOString()
const uuid = () => crypto.randomUUID()

/** Every change the editor makes. */
export class Actions {
  constructor(readonly client: FerriteClient, readonly data: Data, readonly me: () => string) {}

  /** A new step at (x, y), last in order. Returns its id. */
  async addStep(p: Pipeline, at: { x: number; y: number }): Promise<string> {
    const steps = this.data.steps(p.id)
    const id = uuid()
    const position = steps.reduce((m, s) => Math.max(m, s.position), 0) + 1
    await this.client.transaction((tx) =>
      tx.insert('steps', {
        id,
        pipeline_id: p.id,
        name: `Step ${position}`,
        type: 'shell',
        config: {},
        position,
        x: Math.round(at.x),
        y: Math.round(at.y),
        created_at: nowIso(),
      }),
    )
    return id
  }

  moveStep(id: string, x: number, y: number): Promise<number> {
    return this.client.transaction((tx) => tx.update('steps', { id }, { x: Math.round(x), y: Math.round(y) }))
  }

  renameStep(id: string, name: string): Promise<number> {
    return this.client.transaction((tx) => tx.update('steps', { id }, { name }))
  }

  setType(id: string, type: string): Promise<number> {
    return this.client.transaction((tx) => tx.update('steps', { id }, { type }))
  }

  setConfig(id: string, config: Record<string, unknown>): Promise<number> {
    return this.client.transaction((tx) => tx.update('steps', { id }, { config: config as Row }))
  }

  /** Deletes a step (Postgres removes its connections and comments with it). */
  deleteStep(id: string): Promise<number> {
    return this.client.transaction((tx) => tx.delete('steps', { id }))
  }

  connect(p: Pipeline, from: string, to: string): Promise<number> {
    return this.client.transaction((tx) =>
      tx.insert('connections', { id: uuid(), pipeline_id: p.id, from_step_id: from, to_step_id: to, created_at: nowIso() }),
    )
  }

  disconnect(id: string): Promise<number> {
    return this.client.transaction((tx) => tx.delete('connections', { id }))
  }

  comment(p: Pipeline, stepId: string | null, body: string): Promise<number> {
    return this.client.transaction((tx) =>
      tx.insert('comments', { id: uuid(), pipeline_id: p.id, step_id: stepId, user_id: this.me(), body, created_at: nowIso() }),
    )
  }

  /** Saves the pipeline as it is now as the next version number. */
  saveVersion(p: Pipeline): Promise<number> {
    const steps = this.data.steps(p.id)
    const snapshot: Snapshot = {
      steps: steps.map(({ id, name, type, config, position, x, y }) => ({ id, name, type, config, position, x, y })),
      connections: this.data.connections(p.id).map(({ id, from_step_id, to_step_id }) => ({ id, from_step_id, to_step_id })),
    }
    // The highest number in view (a version older than 30 days is out of view: a save that
    // collides with it is rejected with the constraint's message, and the next save is numbered
    // after the one that came back).
    const number = this.data.recentVersions(p.id).reduce((n, v) => Math.max(n, v.version_number), 0) + 1
    return this.client.transaction((tx) =>
      tx.insert('versions', {
        id: uuid(),
        pipeline_id: p.id,
        version_number: number,
        snapshot: snapshot as unknown as Row,
        created_by: this.me(),
        created_at: nowIso(),
      }),
    )
  }

  /**
   * Makes the pipeline what a version holds, in one transaction: connections and steps it does
   * not have are deleted, its steps are updated or inserted (a deleted step comes back as a new
   * insert), then its connections are inserted — in that order, for the foreign keys.
   */
  restoreVersion(p: Pipeline, v: Version): Promise<number> {
    const snap = v.snapshot
    const steps = new Map(this.data.steps(p.id).map((s) => [s.id, s]))
    const conns = new Map(this.data.connections(p.id).map((c) => [c.id, c]))
    const keepSteps = new Set(snap.steps.map((s) => s.id))
    const keepConns = new Set(snap.connections.map((c) => c.id))
    return this.client.transaction((tx) => {
      for (const c of conns.values()) if (!keepConns.has(c.id) || !keepSteps.has(c.from_step_id) || !keepSteps.has(c.to_step_id)) tx.delete('connections', { id: c.id })
      for (const s of steps.values()) if (!keepSteps.has(s.id)) tx.delete('steps', { id: s.id })
      for (const s of snap.steps) {
        const fields = { name: s.name, type: s.type, config: s.config as Row, position: s.position, x: s.x, y: s.y }
        if (steps.has(s.id)) tx.update('steps', { id: s.id }, fields)
        else tx.insert('steps', { id: s.id, pipeline_id: p.id, ...fields, created_at: nowIso() })
      }
      for (const c of snap.connections) {
        if (!conns.has(c.id)) tx.insert('connections', { ...c, pipeline_id: p.id, created_at: nowIso() })
      }
    })
  }

  /** Adds `userId` to a team (owners only: the server refuses anyone else). */
  addMember(teamId: string, userId: string, role: Role): Promise<number> {
    return this.client.transaction((tx) => tx.insert('team_members', { team_id: teamId, user_id: userId, role }))
  }

  setRole(teamId: string, userId: string, role: Role): Promise<number> {
    return this.client.transaction((tx) => tx.update('team_members', { team_id: teamId, user_id: userId }, { role }))
  }

  removeMember(teamId: string, userId: string): Promise<number> {
    return this.client.transaction((tx) => tx.delete('team_members', { team_id: teamId, user_id: userId }))
  }

  /** A new, empty pipeline in a team. Returns its id. */
  async createPipeline(teamId: string, name: string): Promise<string> {
    const id = uuid()
    await this.client.transaction((tx) => tx.insert('pipelines', { id, team_id: teamId, name, description: null, created_by: this.me(), updated_at: nowIso() }))
    return id
  }
}
