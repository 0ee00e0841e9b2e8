-- A later step: a new column with a default, so existing rows keep working.
ALTER TABLE {{prefix}}demo ADD COLUMN note VARCHAR(64) NOT NULL DEFAULT '';
CREATE INDEX {{prefix}}demo_note ON {{prefix}}demo (note);
