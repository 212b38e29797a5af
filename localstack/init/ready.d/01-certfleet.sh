#!/usr/bin/env bash
# certfleet: creates in LocalStack the DynamoDB tables, SQS queues and KMS key
# that template.yaml declares, so the Lambda shape can run offline.
#
# LocalStack runs this when it is ready (docker-compose.yml mounts this folder
# at /etc/localstack/init/ready.d/). It can also be run by hand against a
# running LocalStack; without awslocal on PATH it falls back to
# `aws --endpoint-url "$AWS_ENDPOINT_URL"` (default http://localhost:4566).
# Idempotent: a table, queue or key alias that already exists is left as it is.
#
# Names: every table and queue is "$CERTFLEET_TABLE_PREFIX<name>" (default
# prefix "certfleet-local-"), as "<stack name>-<name>" is in the cloud.
#
# Format. localstack/drift_test.go reads this file and compares it with
# template.yaml and app.Tables (shared/app/tables.go), so keep to it:
#   - one `awslocal dynamodb create-table` command per table, with
#       --table-name "${PREFIX}<name>"
#       --billing-mode <mode>
#       --attribute-definitions AttributeName=<a>,AttributeType=<S|N|B> ...
#       --key-schema AttributeName=<a>,KeyType=HASH [AttributeName=<b>,KeyType=RANGE]
#       --global-secondary-indexes '<JSON list>'   (when the table has indexes)
#     and one `awslocal dynamodb update-time-to-live` command per table, with
#       --table-name "${PREFIX}<name>"
#       --time-to-live-specification Enabled=true,AttributeName=ttl
#   - one `awslocal sqs create-queue` command per queue, with
#       --queue-name "${PREFIX}<name>"
#       --attributes '<JSON object of string values>', where a RedrivePolicy
#       names its dead-letter queue as $(queue_arn "${PREFIX}<name>")
#   - a command may span lines with trailing backslashes and is quoted as in
#     bash; `cond || awslocal ...` and `if ...; then awslocal ...` are fine.
set -euo pipefail

PREFIX="${CERTFLEET_TABLE_PREFIX:-certfleet-local-}"
KMS_ALIAS="alias/certfleet-local"

export AWS_PAGER=""
if ! command -v awslocal >/dev/null 2>&1; then
  export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-${AWS_REGION:-us-east-1}}"
  export AWS_ACCESS_KEY_ID="${AWS_ACCESS_KEY_ID:-test}"
  export AWS_SECRET_ACCESS_KEY="${AWS_SECRET_ACCESS_KEY:-test}"
  awslocal() { aws --endpoint-url "${AWS_ENDPOINT_URL:-http://localhost:4566}" "$@"; }
fi

table_exists() { awslocal dynamodb describe-table --table-name "$1" >/dev/null 2>&1; }
ttl_enabled() {
  [ "$(awslocal dynamodb describe-time-to-live --table-name "$1" \
    --query TimeToLiveDescription.TimeToLiveStatus --output text 2>/dev/null)" = ENABLED ]
}
queue_url() { awslocal sqs get-queue-url --queue-name "$1" --query QueueUrl --output text 2>/dev/null; }
queue_arn() {
  awslocal sqs get-queue-attributes --queue-url "$(queue_url "$1")" \
    --attribute-names QueueArn --query Attributes.QueueArn --output text
}

# ---------------------------------------------------------------- tables ----
# One per entry of app.Tables: string keys pk/sk; an index named X has string
# keys Xpk/Xsk and projects ALL; TTL on the number attribute ttl, where the
# store keeps expiries (it hides expired items itself; LocalStack deletes them
# only with DYNAMODB_REMOVE_EXPIRED_ITEMS=1, which docker-compose.yml sets).
# (Point-in-time recovery and SSE are cloud-only.)

# meta: id counters and other small control records.
table_exists "${PREFIX}meta" ||
  awslocal dynamodb create-table \
    --table-name "${PREFIX}meta" \
    --billing-mode PAY_PER_REQUEST \
    --attribute-definitions \
      AttributeName=pk,AttributeType=S \
      AttributeName=sk,AttributeType=S \
      AttributeName=gsi1pk,AttributeType=S \
      AttributeName=gsi1sk,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
    --global-secondary-indexes '[
      {"IndexName": "gsi1",
       "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"},
                     {"AttributeName": "gsi1sk", "KeyType": "RANGE"}],
       "Projection": {"ProjectionType": "ALL"}}
    ]' \
    >/dev/null
ttl_enabled "${PREFIX}meta" ||
  awslocal dynamodb update-time-to-live \
    --table-name "${PREFIX}meta" \
    --time-to-live-specification Enabled=true,AttributeName=ttl \
    >/dev/null

# identity: users, unique emails and names, sessions, API keys, one-time
# tokens, device refresh tokens and the token signing key; gsi1 lists a
# user's keys and all users.
table_exists "${PREFIX}identity" ||
  awslocal dynamodb create-table \
    --table-name "${PREFIX}identity" \
    --billing-mode PAY_PER_REQUEST \
    --attribute-definitions \
      AttributeName=pk,AttributeType=S \
      AttributeName=sk,AttributeType=S \
      AttributeName=gsi1pk,AttributeType=S \
      AttributeName=gsi1sk,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
    --global-secondary-indexes '[
      {"IndexName": "gsi1",
       "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"},
                     {"AttributeName": "gsi1sk", "KeyType": "RANGE"}],
       "Projection": {"ProjectionType": "ALL"}}
    ]' \
    >/dev/null
ttl_enabled "${PREFIX}identity" ||
  awslocal dynamodb update-time-to-live \
    --table-name "${PREFIX}identity" \
    --time-to-live-specification Enabled=true,AttributeName=ttl \
    >/dev/null

# ratelimit: fixed-window request and login-failure counters, which expire.
table_exists "${PREFIX}ratelimit" ||
  awslocal dynamodb create-table \
    --table-name "${PREFIX}ratelimit" \
    --billing-mode PAY_PER_REQUEST \
    --attribute-definitions \
      AttributeName=pk,AttributeType=S \
      AttributeName=sk,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
    >/dev/null
ttl_enabled "${PREFIX}ratelimit" ||
  awslocal dynamodb update-time-to-live \
    --table-name "${PREFIX}ratelimit" \
    --time-to-live-specification Enabled=true,AttributeName=ttl \
    >/dev/null

# acme: ACME accounts per user with their uniqueness, default and reference
# items, and CA providers added by admins.
table_exists "${PREFIX}acme" ||
  awslocal dynamodb create-table \
    --table-name "${PREFIX}acme" \
    --billing-mode PAY_PER_REQUEST \
    --attribute-definitions \
      AttributeName=pk,AttributeType=S \
      AttributeName=sk,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
    >/dev/null
ttl_enabled "${PREFIX}acme" ||
  awslocal dynamodb update-time-to-live \
    --table-name "${PREFIX}acme" \
    --time-to-live-specification Enabled=true,AttributeName=ttl \
    >/dev/null

# certs: certificate records per user and each user's certificate count;
# gsi1 lists a user's certificates per ACME account, gsi2 lists
# certificates by renewal time.
table_exists "${PREFIX}certs" ||
  awslocal dynamodb create-table \
    --table-name "${PREFIX}certs" \
    --billing-mode PAY_PER_REQUEST \
    --attribute-definitions \
      AttributeName=pk,AttributeType=S \
      AttributeName=sk,AttributeType=S \
      AttributeName=gsi1pk,AttributeType=S \
      AttributeName=gsi1sk,AttributeType=S \
      AttributeName=gsi2pk,AttributeType=S \
      AttributeName=gsi2sk,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
    --global-secondary-indexes '[
      {"IndexName": "gsi1",
       "KeySchema": [{"AttributeName": "gsi1pk", "KeyType": "HASH"},
                     {"AttributeName": "gsi1sk", "KeyType": "RANGE"}],
       "Projection": {"ProjectionType": "ALL"}},
      {"IndexName": "gsi2",
       "KeySchema": [{"AttributeName": "gsi2pk", "KeyType": "HASH"},
                     {"AttributeName": "gsi2sk", "KeyType": "RANGE"}],
       "Projection": {"ProjectionType": "ALL"}}
    ]' \
    >/dev/null
ttl_enabled "${PREFIX}certs" ||
  awslocal dynamodb update-time-to-live \
    --table-name "${PREFIX}certs" \
    --time-to-live-specification Enabled=true,AttributeName=ttl \
    >/dev/null

# issuance: issues per user and certificate, each certificate's active-issue
# marker, and HTTP-01 key authorizations, which expire.
table_exists "${PREFIX}issuance" ||
  awslocal dynamodb create-table \
    --table-name "${PREFIX}issuance" \
    --billing-mode PAY_PER_REQUEST \
    --attribute-definitions \
      AttributeName=pk,AttributeType=S \
      AttributeName=sk,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
    >/dev/null
ttl_enabled "${PREFIX}issuance" ||
  awslocal dynamodb update-time-to-live \
    --table-name "${PREFIX}issuance" \
    --time-to-live-specification Enabled=true,AttributeName=ttl \
    >/dev/null

# ---------------------------------------------------------------- queues ----
# Dead-letter queues first: a RedrivePolicy needs its target's ARN.

# devices: users' devices (X25519 public keys) and the uniqueness of each
# device_public_id per user.
table_exists "${PREFIX}devices" ||
  awslocal dynamodb create-table \
    --table-name "${PREFIX}devices" \
    --billing-mode PAY_PER_REQUEST \
    --attribute-definitions \
      AttributeName=pk,AttributeType=S \
      AttributeName=sk,AttributeType=S \
    --key-schema AttributeName=pk,KeyType=HASH AttributeName=sk,KeyType=RANGE \
    >/dev/null
ttl_enabled "${PREFIX}devices" ||
  awslocal dynamodb update-time-to-live \
    --table-name "${PREFIX}devices" \
    --time-to-live-specification Enabled=true,AttributeName=ttl \
    >/dev/null

# issuance-dlq: issuance messages that failed maxReceiveCount times; the
# worker reads it too (visibility 720 s, at least 6 x its timeout).
queue_url "${PREFIX}issuance-dlq" >/dev/null ||
  awslocal sqs create-queue \
    --queue-name "${PREFIX}issuance-dlq" \
    --attributes '{"MessageRetentionPeriod": "1209600", "VisibilityTimeout": "720"}' \
    >/dev/null

# issuance: one message per issuance step, read by the worker. Visibility
# timeout 360 s = 6 x the worker's 60 s timeout.
queue_url "${PREFIX}issuance" >/dev/null ||
  awslocal sqs create-queue \
    --queue-name "${PREFIX}issuance" \
    --attributes '{
      "VisibilityTimeout": "360",
      "MessageRetentionPeriod": "345600",
      "RedrivePolicy": "{\"deadLetterTargetArn\": \"'"$(queue_arn "${PREFIX}issuance-dlq")"'\", \"maxReceiveCount\": \"5\"}"
    }' \
    >/dev/null

# ------------------------------------------------------------------ keys ----
# The key that wraps data keys (SecretsKey in template.yaml), found by alias.

if ! awslocal kms describe-key --key-id "$KMS_ALIAS" >/dev/null 2>&1; then
  key_id="$(awslocal kms create-key \
    --description "certfleet-local: wraps data keys for stored secrets" \
    --query KeyMetadata.KeyId --output text)"
  awslocal kms enable-key-rotation --key-id "$key_id"
  awslocal kms create-alias --alias-name "$KMS_ALIAS" --target-key-id "$key_id"
fi

# ---------------------------------------------------------------- report ----

echo "certfleet: LocalStack resources ready. Environment for the Lambda shape:"
echo "  AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://localhost:4566}"
echo "  CERTFLEET_TABLE_PREFIX=${PREFIX}"
echo "  CERTFLEET_ISSUANCE_QUEUE_URL=$(queue_url "${PREFIX}issuance")"
echo "  CERTFLEET_ISSUANCE_DLQ_URL=$(queue_url "${PREFIX}issuance-dlq")"
echo "  CERTFLEET_KMS_KEY_ID=${KMS_ALIAS}"
echo "  CERTFLEET_LOG_FORMAT=json"
echo "  CERTFLEET_PUBLIC_URL=${CERTFLEET_PUBLIC_URL:-http://localhost:8080}"
