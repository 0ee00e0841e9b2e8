-- The first schema of a demo component.
CREATE TABLE IF NOT EXISTS {{prefix}}demo (
  id   INTEGER     NOT NULL PRIMARY KEY,
  name VARCHAR(64) NOT NULL
);
