-- Pipeline editor example schema (from the seed documents: teams, users, pipelines, steps,
-- connections between steps, comments and saved versions).
--
-- Access rules in ferrite.toml are where clauses on the row itself (no joins), so every row that
-- belongs to a pipeline carries the pipeline's team_id. Composite foreign keys keep that copy
-- honest: (pipeline_id, team_id) must name an existing pipeline of that team, so a row cannot
-- claim another team's pipeline, and moving a pipeline to another team moves its rows along
-- (ON UPDATE CASCADE). Connections and step comments likewise name (step, pipeline) pairs, so an
-- edge can only join two steps of its own pipeline.

CREATE TABLE teams (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE users (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  name        text NOT NULL,
  email       text NOT NULL UNIQUE,
  avatar_url  text,
  color       text NOT NULL DEFAULT '#4f46e5',
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE team_members (
  team_id     uuid NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
  user_id     uuid NOT NULL REFERENCES users(id) ON DELETE CASCADE,
  role        text NOT NULL DEFAULT 'editor' CHECK (role IN ('owner', 'editor', 'viewer')),
  PRIMARY KEY (team_id, user_id)
);

CREATE TABLE pipelines (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  team_id      uuid NOT NULL REFERENCES teams(id) ON DELETE CASCADE,
  name         text NOT NULL,
  description  text,
  yaml_version varchar(10) NOT NULL DEFAULT 'v2',
  config       jsonb NOT NULL DEFAULT '{}',
  created_by   uuid REFERENCES users(id),
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (id, team_id)
);
CREATE INDEX pipelines_team_id ON pipelines(team_id);

CREATE TABLE steps (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pipeline_id    uuid NOT NULL,
  team_id        uuid NOT NULL,
  name           text NOT NULL,
  type           text NOT NULL,
  config         jsonb NOT NULL DEFAULT '{}',
  position       integer NOT NULL,
  x              double precision NOT NULL DEFAULT 0,
  y              double precision NOT NULL DEFAULT 0,
  parent_step_id uuid REFERENCES steps(id) ON DELETE SET NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (pipeline_id, team_id) REFERENCES pipelines(id, team_id) ON DELETE CASCADE ON UPDATE CASCADE,
  UNIQUE (id, pipeline_id)
);
CREATE INDEX steps_pipeline_id ON steps(pipeline_id);
CREATE INDEX steps_team_id ON steps(team_id);

CREATE TABLE connections (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pipeline_id   uuid NOT NULL,
  team_id       uuid NOT NULL,
  from_step_id  uuid NOT NULL,
  to_step_id    uuid NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (pipeline_id, team_id) REFERENCES pipelines(id, team_id) ON DELETE CASCADE ON UPDATE CASCADE,
  FOREIGN KEY (from_step_id, pipeline_id) REFERENCES steps(id, pipeline_id) ON DELETE CASCADE,
  FOREIGN KEY (to_step_id, pipeline_id) REFERENCES steps(id, pipeline_id) ON DELETE CASCADE,
  CHECK (from_step_id <> to_step_id)
);
CREATE INDEX connections_pipeline_id ON connections(pipeline_id);
CREATE INDEX connections_team_id ON connections(team_id);

CREATE TABLE comments (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pipeline_id  uuid NOT NULL,
  team_id      uuid NOT NULL,
  step_id      uuid,
  user_id      uuid NOT NULL REFERENCES users(id),
  body         text NOT NULL CHECK (length(body) BETWEEN 1 AND 4000),
  created_at   timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (pipeline_id, team_id) REFERENCES pipelines(id, team_id) ON DELETE CASCADE ON UPDATE CASCADE,
  FOREIGN KEY (step_id, pipeline_id) REFERENCES steps(id, pipeline_id) ON DELETE CASCADE
);
CREATE INDEX comments_pipeline_id ON comments(pipeline_id);
CREATE INDEX comments_team_id ON comments(team_id);

CREATE TABLE pipeline_versions (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pipeline_id     uuid NOT NULL,
  team_id         uuid NOT NULL,
  version_number  integer NOT NULL CHECK (version_number > 0),
  snapshot        jsonb NOT NULL,
  created_by      uuid REFERENCES users(id),
  created_at      timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (pipeline_id, team_id) REFERENCES pipelines(id, team_id) ON DELETE CASCADE ON UPDATE CASCADE,
  UNIQUE (pipeline_id, version_number)
);
CREATE INDEX pipeline_versions_team_id ON pipeline_versions(team_id);
