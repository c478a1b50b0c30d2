-- Every table of the throwaway database baseline builds on (appdb/adopt/baseline.py), by name: it
-- counts each one's rows before and after the migration. The schemas in {skip} and the system's aside.
SELECT c.oid::pg_catalog.regclass::text FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'm') AND n.nspname <> ALL ({skip})
  AND n.nspname NOT LIKE 'pg\_%' AND n.nspname <> 'information_schema'
ORDER BY 1
