-- Removes what changelog.sql installed (trigger first, then table and sequence).
DROP TRIGGER ETL_CLIENTS_CHLOG;
DROP TABLE ETL_CLIENTS_LOG;
DROP SEQUENCE ETL_CLIENTS_LOG_SEQ;
