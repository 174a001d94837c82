-- Pipeline editor example schema (from the seed documents: teams, users, pipelines, steps,
-- connections between steps, comments and saved versions).
--
-- Normalised: only a pipeline names its team. Steps, connections, comments and versions belong
-- to a pipeline and reach their team through it — the access rules in ferrite.toml read
-- `pipelines` and `team_members` through subqueries, so moving a pipeline to another team or
-- changing a membership moves its rows in and out of readers' shapes live. Composite foreign
-- keys keep the graph honest: a connection joins two steps of its own pipeline, and a comment
-- on a step is on a step of its pipeline.

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
  updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX pipelines_team_id ON pipelines(team_id);

CREATE TABLE steps (
  id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pipeline_id    uuid NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
  name           text NOT NULL,
  type           text NOT NULL,
  config         jsonb NOT NULL DEFAULT '{}',
  position       integer NOT NULL,
  x              double precision NOT NULL DEFAULT 0,
  y              double precision NOT NULL DEFAULT 0,
  parent_step_id uuid REFERENCES steps(id) ON DELETE SET NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (id, pipeline_id)
);
CREATE INDEX steps_pipeline_id ON steps(pipeline_id);

CREATE TABLE connections (
  id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pipeline_id   uuid NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
  from_step_id  uuid NOT NULL,
  to_step_id    uuid NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (from_step_id, pipeline_id) REFERENCES steps(id, pipeline_id) ON DELETE CASCADE,
  FOREIGN KEY (to_step_id, pipeline_id) REFERENCES steps(id, pipeline_id) ON DELETE CASCADE,
  CHECK (from_step_id <> to_step_id)
);
CREATE INDEX connections_pipeline_id ON connections(pipeline_id);

CREATE TABLE comments (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pipeline_id  uuid NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
  step_id      uuid,
  user_id      uuid NOT NULL REFERENCES users(id),
  body         text NOT NULL CHECK (length(body) BETWEEN 1 AND 4000),
  created_at   timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (step_id, pipeline_id) REFERENCES steps(id, pipeline_id) ON DELETE CASCADE
);
CREATE INDEX comments_pipeline_id ON comments(pipeline_id);

CREATE TABLE pipeline_versions (
  id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  pipeline_id     uuid NOT NULL REFERENCES pipelines(id) ON DELETE CASCADE,
  version_number  integer NOT NULL CHECK (version_number > 0),
  snapshot        jsonb NOT NULL,
  created_by      uuid REFERENCES users(id),
  created_at      timestamptz NOT NULL DEFAULT now(),
  UNIQUE (pipeline_id, version_number)
);
-- The versions panel reads the newest of each pipeline.
CREATE INDEX pipeline_versions_recent ON pipeline_versions(pipeline_id, created_at DESC);
-- Rules read memberships by user.
CREATE INDEX team_members_user_id ON team_members(user_id);
