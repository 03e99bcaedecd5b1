-- Sets the ETL roles' passwords from psql variables (never written in a
-- file of the repository):
--
--   psql -v ON_ERROR_STOP=1 -d etl \
--        -v owner="$ETL_OWNER_PASSWORD" -v loader="$ETL_LOADER_PASSWORD" \
--        -v matcher="$ETL_MATCHER_PASSWORD" -v readonly="$ETL_READONLY_PASSWORD" \
--        -v operator="$ETL_OPERATOR_PASSWORD" -v identity="$ETL_IDENTITY_PASSWORD" \
--        -f deploy/postgres/passwords.sql
--
-- Run after roles.sql. Idempotent. PostgreSQL stores them SCRAM-hashed.
ALTER ROLE etl_owner PASSWORD :'owner';
ALTER ROLE etl_loader PASSWORD :'loader';
ALTER ROLE etl_matcher PASSWORD :'matcher';
ALTER ROLE etl_readonly PASSWORD :'readonly';
ALTER ROLE etl_operator PASSWORD :'operator';
ALTER ROLE etl_identity PASSWORD :'identity';
