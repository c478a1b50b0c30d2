-- Revert of 027: drop app.memberships.
--
-- This loses every membership, so it is refused while the table has rows unless data
-- loss was allowed on purpose (`appdb revert 027 --allow-data-loss`, which sets
-- appdb.allow_data_loss; on dev and local the Pulumi stacks pass it, never on prod).
-- The group roles app_writer and app_reader stay: the Pulumi program owns them.

-- appdb:step drop_table
DO $guard$
DECLARE
    rows_held bigint;
BEGIN
    IF to_regclass('app.memberships') IS NULL
       OR current_setting('appdb.allow_data_loss', true) = 'on' THEN
        RETURN;
    END IF;
    SELECT count(*) INTO rows_held FROM app.memberships;
    IF rows_held > 0 THEN
        RAISE EXCEPTION 'reverting 027 drops app.memberships and its % row(s); nothing was changed', rows_held
            USING ERRCODE = 'AP001',
                  HINT = 'keep the rows: restore migration 027 in the code; or drop them on purpose: take a '
                         'backup or point-in-time-recovery snapshot, run appdb revert 027 --allow-data-loss, '
                         'then pulumi up (docs/rollback.md)';
    END IF;
END
$guard$;

-- squawk-ignore ban-drop-table
DROP TABLE IF EXISTS app.memberships;
