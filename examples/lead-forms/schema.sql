-- Offline lead forms for many tenants (from the seed document "offline-lead-forms-task"): each
-- tenant has a public site with a lead form that works offline, and staff who work the leads.
-- Every row carries its tenant. The CHECK constraints are the server's validation: a lead that
-- breaks one is refused with the constraint's name, which the form turns into words.

CREATE TABLE tenants (
  id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  slug         text NOT NULL UNIQUE CHECK (slug ~ '^[a-z0-9][a-z0-9-]{0,40}$'),
  name         text NOT NULL,
  brand_color  text NOT NULL DEFAULT '#2563eb' CHECK (brand_color ~ '^#[0-9a-fA-F]{6}$'),
  tagline      text NOT NULL DEFAULT ''
);

-- The people who sign in to a tenant's inbox.
CREATE TABLE staff (
  id          uuid PRIMARY KEY,
  tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  name        text NOT NULL,
  email       text NOT NULL UNIQUE,
  avatar_url  text,
  color       text NOT NULL DEFAULT '#64748b'
);
CREATE INDEX staff_tenant_id ON staff(tenant_id);

CREATE TABLE forms (
  id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id  uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  title      text NOT NULL,
  fields     jsonb NOT NULL DEFAULT '[]'
);
CREATE INDEX forms_tenant_id ON forms(tenant_id);

CREATE TABLE leads (
  id          uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id   uuid NOT NULL REFERENCES tenants(id) ON DELETE CASCADE,
  form_id     uuid REFERENCES forms(id) ON DELETE SET NULL,
  name        text NOT NULL,
  email       text NOT NULL,
  phone       text,
  message     text NOT NULL,
  status      text NOT NULL DEFAULT 'new' CHECK (status IN ('new', 'contacted', 'won', 'lost')),
  notes       text NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now(),
  updated_at  timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT leads_name_check CHECK (length(name) >= 2),
  CONSTRAINT leads_name_length CHECK (length(name) <= 200),
  CONSTRAINT leads_email_check CHECK (email ~ '^[^@[:space:]]+@[^@[:space:]]+\.[^@[:space:]]+$'),
  CONSTRAINT leads_message_check CHECK (length(message) >= 10),
  CONSTRAINT leads_message_length CHECK (length(message) <= 5000),
  CONSTRAINT leads_phone_check CHECK (phone IS NULL OR phone ~ '^[0-9 +()-]{6,20}$'),
  CONSTRAINT leads_notes_length CHECK (length(notes) <= 5000)
);
CREATE INDEX leads_tenant_id ON leads(tenant_id);
