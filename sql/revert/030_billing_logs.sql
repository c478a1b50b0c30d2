-- Revert of 030: drop app.billing_logs.
--
-- This loses every row of app.billing_logs (on production that includes the rows the
-- backend's older migrations wrote before 030 adopted the table), so it is refused
-- while the table has rows unless data loss was allowed on purpose
-- (`appdb revert 030 --allow-data-loss`, which sets appdb.allow_data_loss; on dev and
-- local the Pulumi stacks pass it, never on prod).

-- appdb:step drop_table
DO $guard$
DECLARE
    rows_held bigint;
BEGIN
    IF to_regclass('app.billing_logs') IS NULL
       OR current_setting('appdb.allow_data_loss', true) = 'on' THEN
        RETURN;
    END IF;
    SELECT count(*) INTO rows_held FROM app.billing_logs;
    IF rows_held > 0 THEN
        RAISE EXCEPTION 'reverting 030 drops app.billing_logs and its % row(s); nothing was changed', rows_held
            USING ERRCODE = 'AP001',
                  HINT = 'keep the rows: restore migration 030 in the code; or drop them on purpose: take a '
                         'backup or point-in-time-recovery snapshot, run appdb revert 030 --allow-data-loss, '
                         'then pulumi up (docs/rollback.md)';
    END IF;
END
$guard$;

-- squawk-ignore ban-drop-table
DROP TABLE IF EXISTS app.billing_logs;
-- The trigger function served only the table's own triggers, dropped with it.
-- squawk-ignore ban-drop-function
DROP FUNCTION IF EXISTS app.billing_logs_append_only();
