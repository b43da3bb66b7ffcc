#!/usr/bin/env bash
# Runs the README's "Using curl" commands, verbatim, with the real curl against a live server,
# and stops at the first unexpected status, checksum or value ("not ok - ..." on stderr,
# exit 1). Each README command appears below exactly as written there, prefixed by
# `check STATUS` (which adds -D to record the headers and checks the final status);
# test/curl-walkthrough.test.ts checks that, starts a server, and runs this script.
#
#   BASE=http://127.0.0.1:3000 SFS_DATA_DIR=/path/to/data test/cli/curl-walkthrough.sh
#
# Needs curl (7.82+ for --json), jq, sha256sum, openssl, cmp. Use it on a fresh server: it
# performs the first-run setup.
set -euo pipefail
: "${BASE:?set BASE to the server URL, e.g. http://127.0.0.1:3000}"
: "${SFS_DATA_DIR:?set SFS_DATA_DIR to the server data directory (holding setup-code)}"

for tool in curl jq sha256sum openssl cmp; do
  command -v "$tool" >/dev/null || { echo "not ok - $tool is needed (apt-get install $tool)" >&2; exit 1; }
done

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The README runs in the server's directory, where data/setup-code is.
mkdir "$WORK/owner" "$WORK/downloads" "$WORK/recipient"
ln -s "$SFS_DATA_DIR" "$WORK/owner/data"
cd "$WORK/owner"

n=0
ok() { n=$((n + 1)); echo "ok $n - $*"; }
fail() { echo "not ok - $*" >&2; exit 1; }

# check STATUS curl ARGS...: runs the command with -D added, passes its output through, and
# fails unless the final HTTP status is STATUS. The headers stay in $WORK/headers.
check() {
  local want=$1
  shift
  "$@" -D "$WORK/headers" || fail "curl exited $?: $(redact "$*")"
  local got
  got=$(awk '/^HTTP\//{ s = $2 } END { print s }' "$WORK/headers")
  [ "$got" = "$want" ] || fail "expected HTTP $want, got ${got:-no answer}: $(redact "$*")"
}
# redact TEXT: the API token replaced by $TOKEN, so failure messages do not show it.
redact() { if [ -n "${TOKEN:-}" ]; then echo "${1//$TOKEN/\$TOKEN}"; else echo "$1"; fi; }
# header NAME: a header of the last checked response.
header() { grep -i "^$1:" "$WORK/headers" | tail -1 | cut -d' ' -f2- | tr -d '\r'; }
# same A B WHAT: fails unless A equals B.
same() { [ "$1" = "$2" ] || fail "$3: expected '$2', got '$1'"; }

# Files of "your own": a report spanning several 64 KiB chunks, and a small picture.
head -c 300000 /dev/urandom > report.pdf
head -c 5000 /dev/urandom > scan.png
REPORT_SHA=$(sha256sum report.pdf | cut -d' ' -f1)

# ---- Set up and get a token ------------------------------------------------------------
SETUP_CODE=$(cat data/setup-code)
check 201 curl -sS "$BASE/api/v1/setup" --json "{\"setupCode\":\"$SETUP_CODE\",\"username\":\"admin\",\"password\":\"a long passphrase\"}" > out.json
same "$(jq -r .user.role out.json)" admin "setup"
ok "setup created the first admin"
TOKEN=$(check 201 curl -sS "$BASE/api/v1/auth/tokens" --json '{"username":"admin","password":"a long passphrase","name":"laptop"}' | jq -r .token)
[[ $TOKEN =~ ^sfs_[A-Za-z0-9_-]{43}$ ]] || fail "token: got '$TOKEN'"
ok "got an API token"
AUTH="Authorization: Bearer $TOKEN"
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/me" > out.json
same "$(jq -r .username out.json)" admin "GET /me"
ok "the token works"

# ---- Upload ----------------------------------------------------------------------------
check 201 curl -sS -H "$AUTH" -F file=@report.pdf -F file=@scan.png "$BASE/api/v1/files" > out.json
same "$(jq -r '[.files[].name] | join(",")' out.json)" "report.pdf,scan.png" "multipart names"
same "$(jq -r '.files[0].sha256' out.json)" "$REPORT_SHA" "multipart sha256"
ok "multipart upload of two files"
check 201 curl -sS -H "$AUTH" -F sha256=$(sha256sum report.pdf | cut -d' ' -f1) -F file=@report.pdf "$BASE/api/v1/files" > out.json
ok "multipart upload with a checked sha256"
# The same command with a wrong sha256 is refused and stores nothing.
check 422 curl -sS -H "$AUTH" -F sha256=$(sha256sum scan.png | cut -d' ' -f1) -F file=@report.pdf "$BASE/api/v1/files" > out.json
same "$(jq -r .code out.json)" checksum_mismatch "wrong sha256"
ok "a wrong sha256 is a 422"
FILE_ID=$(check 201 curl -sS -H "$AUTH" -T report.pdf "$BASE/api/v1/uploads/" | jq -r .file.id)
[[ $FILE_ID =~ ^[0-9a-f]{32}$ ]] || fail "raw upload: file id '$FILE_ID'"
same "$(header Location)" "/api/v1/files/$FILE_ID" "raw upload Location"
ok "raw upload with -T"
check 201 curl -sS -H "$AUTH" -T report.pdf -H "Content-Digest: sha-256=:$(openssl dgst -sha256 -binary report.pdf | base64):" "$BASE/api/v1/uploads/" > out.json
ok "raw upload with a checked Content-Digest"

# ---- List and look up --------------------------------------------------------------------
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/files?limit=20" > out.json
same "$(jq '.files | length' out.json)" 5 "files listed"
same "$(jq -r '.files[1].id' out.json)" "$FILE_ID" "newest first"
ok "list"
CURSOR=$(check 200 curl -sS -H "$AUTH" "$BASE/api/v1/files?limit=1" | jq -r .nextCursor)
[ -n "$CURSOR" ] && [ "$CURSOR" != null ] || fail "no cursor"
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/files?limit=1&cursor=$CURSOR" > out.json
same "$(jq -r '.files[0].id' out.json)" "$FILE_ID" "second page"
ok "cursor paging"
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/files/$FILE_ID" > out.json
same "$(jq -r '[.name, .size, .sha256] | join(" ")' out.json)" "report.pdf 300000 $REPORT_SHA" "metadata"
ok "metadata"

# ---- Download and verify -----------------------------------------------------------------
cd "$WORK/downloads"
check 200 curl -sS -H "$AUTH" -OJ "$BASE/api/v1/files/$FILE_ID/content"
cmp report.pdf ../owner/report.pdf || fail "-OJ download differs from the upload"
ok "download with -OJ, byte for byte"
check 200 curl -sS -I -H "$AUTH" "$BASE/api/v1/files/$FILE_ID/content" > head.txt
same "$(header Content-Length)" 300000 "HEAD Content-Length"
same "$(header ETag)" "\"$REPORT_SHA\"" "ETag"
ok "headers with -I"
echo "$(check 200 curl -sS -H "$AUTH" "$BASE/api/v1/files/$FILE_ID" | jq -r .sha256)  report.pdf" | sha256sum -c - > /dev/null
ok "sha256sum -c against the metadata"
DIGEST=$(check 200 curl -sS -I -H "$AUTH" "$BASE/api/v1/files/$FILE_ID/content" | grep -i '^repr-digest' | cut -d' ' -f2- | tr -d '\r')
same "$DIGEST" "$(echo "sha-256=:$(openssl dgst -sha256 -binary report.pdf | base64):")" "Repr-Digest"
ok "Repr-Digest matches openssl"

# ---- Resume or fetch a slice ---------------------------------------------------------------
head -c 100000 ../owner/report.pdf > report.pdf   # an interrupted download
check 206 curl -sS -H "$AUTH" -C - -o report.pdf "$BASE/api/v1/files/$FILE_ID/content"
same "$(header Content-Range)" "bytes 100000-299999/300000" "resume Content-Range"
cmp report.pdf ../owner/report.pdf || fail "resumed download differs"
ok "resume with -C -"
check 206 curl -sS -H "$AUTH" --range 0-1023 -o first-kib.bin "$BASE/api/v1/files/$FILE_ID/content"
cmp first-kib.bin <(head -c 1024 ../owner/report.pdf) || fail "range differs"
ok "a slice with --range"

# ---- Share -------------------------------------------------------------------------------------
cd "$WORK/owner"
SHARE=$(check 201 curl -sS -H "$AUTH" "$BASE/api/v1/files/$FILE_ID/shares" --json '{"expiresInSeconds":86400,"maxDownloads":3,"password":"tell them by phone","note":"for Dr. Lee"}')
SHARE_URL=$(echo "$SHARE" | jq -r .url)
SHARE_ID=$(echo "$SHARE" | jq -r .id)
same "$SHARE_URL" "$BASE/s/$(echo "$SHARE" | jq -r .token)" "share url"
ok "share link created"
cd "$WORK/recipient"
check 401 curl -sS -OJ "$SHARE_URL/content" -o /dev/null
check 401 curl -sS -u ':not the password' "$SHARE_URL/content" -o /dev/null
ok "no or a wrong password is a 401"
check 200 curl -sS -u ':tell them by phone' -OJ "$SHARE_URL/content"
cmp report.pdf ../owner/report.pdf || fail "recipient download differs"
ok "recipient download with -u :password"
head -c 250000 ../owner/report.pdf > report.pdf
check 206 curl -sS -u ':tell them by phone' -C - -o report.pdf "$SHARE_URL/content"
cmp report.pdf ../owner/report.pdf || fail "recipient resume differs"
ok "recipient resume with -C -"
cd "$WORK/owner"
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/files/$FILE_ID/shares" > out.json
same "$(jq -r '.shares[0] | "\(.downloads)/\(.maxDownloads) \(.status)"' out.json)" "2/3 active" "share downloads"
ok "the owner sees 2 of 3 downloads"
check 204 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/shares/$SHARE_ID"
check 404 curl -sS -u ':tell them by phone' "$SHARE_URL/content" -o /dev/null
ok "a revoked link is a 404"

# ---- Share several files (a bundle) --------------------------------------------------------------
SCAN_ID=$(check 201 curl -sS -H "$AUTH" -T scan.png "$BASE/api/v1/uploads/" | jq -r .file.id)
BUNDLE_URL=$(check 201 curl -sS -H "$AUTH" "$BASE/api/v1/shares" --json "{\"fileIds\":[\"$FILE_ID\",\"$SCAN_ID\"],\"maxDownloads\":3}" | jq -r .url)
[[ $BUNDLE_URL =~ ^$BASE/s/[A-Za-z0-9_-]{43}$ ]] || fail "bundle url '$BUNDLE_URL'"
ok "bundle link created"
cd "$WORK/recipient"
check 200 curl -sS -OJ "$BUNDLE_URL/zip"
unzip -t shared-files.zip > /dev/null || fail "unzip -t failed"
unzip -p shared-files.zip report.pdf | cmp - ../owner/report.pdf || fail "zip entry differs"
ok "bundle zip downloaded and tested"
cp shared-files.zip whole.zip
head -c 100000 whole.zip > shared-files.zip
check 206 curl -sS -C - -o shared-files.zip "$BUNDLE_URL/zip"
cmp shared-files.zip whole.zip || fail "resumed zip differs"
ok "bundle zip resumed with -C -"
check 200 curl -sS -OJ "$BUNDLE_URL/files/$SCAN_ID"
cmp scan.png ../owner/scan.png || fail "bundle file differs"
ok "one file of the bundle"
check 404 curl -sS "$BUNDLE_URL/zip" -o /dev/null
ok "the bundle's three downloads are used up"
cd "$WORK/owner"
# ---- Ask for files (upload requests) -------------------------------------------------------
REQ=$(check 201 curl -sS -H "$AUTH" "$BASE/api/v1/requests" --json '{"title":"Your tax documents","message":"The 2025 statements, please.","expiresInSeconds":604800,"password":"read it to them","maxFiles":10,"maxBytes":104857600,"maxFileBytes":20971520,"requireName":true}')
REQ_URL=$(echo "$REQ" | jq -r .url)
REQ_ID=$(echo "$REQ" | jq -r .id)
same "$REQ_URL" "$BASE/r/$(echo "$REQ" | jq -r .token)" "request url"
ok "upload request created"
check 201 curl -sS -u ':read it to them' -H 'X-Uploader-Name: Ada Client' -T report.pdf "$REQ_URL/" > out.json
same "$(jq -r '.files[0] | "\(.name) \(.sha256)"' out.json)" "report.pdf $REPORT_SHA" "request -T receipt"
ok "an uploader sends a file with curl -T and gets a receipt"
check 201 curl -sS -u ':read it to them' -F name='Ada Client' -F file=@report.pdf -F file=@scan.png "$REQ_URL" > out.json
same "$(jq -r '[.files[].name] | join(",")' out.json)" "report.pdf,scan.png" "request -F receipt"
ok "an uploader sends two files with curl -F"
check 401 curl -sS -T report.pdf "$REQ_URL/" -o /dev/null
ok "no password is a 401"
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/requests" > out.json
same "$(jq -r '.requests[0] | "\(.filesReceived) \(.status)"' out.json)" "3 active" "request list"
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/requests/$REQ_ID" > out.json
same "$(jq -r '.files | length' out.json)" "3" "request files"
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/files?requestId=$REQ_ID" > out.json
same "$(jq -r '[.files[].uploaderName] | unique | join(",")' out.json)" "Ada Client" "uploader name"
ok "the owner sees the three files and who sent them"
check 200 curl -sS -H "$AUTH" -X PATCH "$BASE/api/v1/requests/$REQ_ID" --json '{"close":true}' > out.json
same "$(jq -r .status out.json)" "closed" "request closed"
check 404 curl -sS -u ':read it to them' -T report.pdf "$REQ_URL/" -o /dev/null
ok "a closed request is a 404"
check 200 curl -sS -H "$AUTH" -X PUT "$BASE/api/v1/requests/$REQ_ID/hold" --json '{"reason":"Smith v. Jones"}' > out.json
same "$(jq -r .scope out.json)" request "request hold"
check 409 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/requests/$REQ_ID" -o /dev/null
check 204 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/requests/$REQ_ID/hold"
ok "a held request cannot be deleted; the hold is released"
check 204 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/requests/$REQ_ID"
ok "the request is deleted"
# ---- Expiry and legal hold ------------------------------------------------------------------------
check 201 curl -sS -H "$AUTH" -T scan.png "$BASE/api/v1/uploads/scan.png?expiresInSeconds=604800" > out.json
[ "$(jq -r '.file.expiresAt | sub("\\.[0-9]+Z$"; "Z") | fromdateiso8601' out.json)" -gt "$(( $(date +%s) + 604000 ))" ] || fail "upload expiry: $(jq -r .file.expiresAt out.json)"
check 201 curl -sS -H "$AUTH" -F expiresInSeconds=86400 -F file=@scan.png "$BASE/api/v1/files" > out.json
[ "$(jq -r '.files[0].expiresAt' out.json)" != null ] || fail "multipart upload expiry"
ok "uploads with an expiry"
check 200 curl -sS -H "$AUTH" -X PATCH "$BASE/api/v1/files/$FILE_ID" --json '{"expiresInSeconds":2592000}' > out.json
[ "$(jq -r .expiresAt out.json)" != null ] || fail "PATCH expiry"
ok "expiry changed"
check 201 curl -sS -H "$AUTH" "$BASE/api/v1/files/$FILE_ID/shares" --json '{"maxDownloads":1,"deleteFileAfterLastDownload":true}' > out.json
same "$(jq -r .deleteFileAfterLastDownload out.json)" true "delete-after link"
check 204 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/shares/$(jq -r .id out.json)"
ok "a link that deletes the file after its last download"
check 200 curl -sS -H "$AUTH" -X PUT "$BASE/api/v1/files/$FILE_ID/hold" --json '{"reason":"Smith v. Jones","reference":"CASE-17"}' > out.json
same "$(jq -r .reference out.json)" CASE-17 "hold placed"
check 409 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/files/$FILE_ID" > out.json
same "$(jq -r .code out.json)" legal_hold "delete under hold"
check 204 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/files/$FILE_ID/hold"
ok "a held file cannot be deleted; the hold is released"

# ---- Delete -------------------------------------------------------------------------------------
check 204 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/files/$FILE_ID"
check 404 curl -sS -H "$AUTH" "$BASE/api/v1/files/$FILE_ID" -o /dev/null
ok "delete, then 404"

# ---- Audit log, tokens, users --------------------------------------------------------------------
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/audit?limit=50" > out.json
jq -e '[.events[].action] | index("share.download") and index("file.delete")' out.json > /dev/null || fail "audit lacks events"
ok "audit log"
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/audit?fileId=$FILE_ID" > out.json
same "$(jq -r '[.events[].fileId] | unique | join(",")' out.json)" "$FILE_ID" "audit by file"
ok "audit log of one file"
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/auth/tokens" > out.json
same "$(jq -r '.tokens[0].name' out.json)" laptop "token list"
OLD_TOKEN_ID=$(check 201 curl -sS "$BASE/api/v1/auth/tokens" --json '{"username":"admin","password":"a long passphrase","name":"old laptop"}' | jq -r .id)
check 204 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/auth/tokens/$OLD_TOKEN_ID"
ok "tokens listed, created and revoked"
USER_ID=$(check 201 curl -sS -H "$AUTH" "$BASE/api/v1/users" --json '{"username":"bob","password":"bob passphrase","role":"user"}' | jq -r .id)
BOB=$(check 201 curl -sS "$BASE/api/v1/auth/tokens" --json '{"username":"bob","password":"bob passphrase"}' | jq -r .token)
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/users" > out.json
same "$(jq -r '[.users[].username] | sort | join(",")' out.json)" "admin,bob" "users"
check 200 curl -sS -H "$AUTH" -X PATCH "$BASE/api/v1/users/$USER_ID" --json '{"quotaBytes":1073741824}' > out.json
same "$(jq -r .quotaBytes out.json)" 1073741824 "quota"
check 200 curl -sS -H "$AUTH" -X PUT "$BASE/api/v1/users/$USER_ID/hold" --json '{"reason":"custodian in Smith v. Jones"}' > out.json
same "$(jq -r .scope out.json)" user "user hold"
check 204 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/users/$USER_ID/hold"
ok "a user's legal hold placed and released"
BOB_FILE_ID=$(check 201 curl -sS -H "Authorization: Bearer $BOB" -T report.pdf "$BASE/api/v1/uploads/" | jq -r .file.id)
check 201 curl -sS -H "Authorization: Bearer $BOB" "$BASE/api/v1/files/$BOB_FILE_ID/shares" --json '{}' -o /dev/null
check 201 curl -sS -H "Authorization: Bearer $BOB" "$BASE/api/v1/files/$BOB_FILE_ID/shares" --json '{}' -o /dev/null
BOB_SHARE_ID=$(check 200 curl -sS -H "$AUTH" "$BASE/api/v1/users/$USER_ID/shares" | jq -r '.shares[0].id')
check 204 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/users/$USER_ID/shares/$BOB_SHARE_ID"
check 200 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/users/$USER_ID/shares" > out.json
same "$(jq -r .revoked out.json)" 1 "an admin revoked bob's links"
check 200 curl -sS -H "$AUTH" -X PATCH "$BASE/api/v1/users/$USER_ID" --json '{"disabled":true}' > out.json
check 401 curl -sS -H "Authorization: Bearer $BOB" "$BASE/api/v1/me" -o /dev/null
ok "users created, changed and disabled (the token stops working)"
check 200 curl -sS -H "$AUTH" -X PATCH "$BASE/api/v1/me" --json '{"currentPassword":"a long passphrase","newPassword":"another long passphrase"}' > out.json
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/me" -o /dev/null
check 401 curl -sS "$BASE/api/v1/auth/tokens" --json '{"username":"admin","password":"a long passphrase"}' -o /dev/null
ok "password changed; the old one is refused"

# ---- "Resumable uploads (tus)": create, a first part, HEAD, the rest from the offset -----------
TUS_URL=$BASE$(check 201 curl -sS -H "$AUTH" -H 'Tus-Resumable: 1.0.0' -H "Upload-Length: $(wc -c < report.pdf)" -H "Upload-Metadata: filename $(printf report.pdf | base64)" -X POST -o /dev/null -w '%header{location}' "$BASE/api/v1/tus/")
[[ $TUS_URL =~ /api/v1/tus/[0-9a-f]{32}$ ]] || fail "tus Location: got '$TUS_URL'"
head -c 100000 report.pdf | check 204 curl -sS -H "$AUTH" -H 'Tus-Resumable: 1.0.0' -H 'Upload-Offset: 0' -H 'Content-Type: application/offset+octet-stream' -X PATCH -T - "$TUS_URL"
same "$(header Upload-Offset)" 65536 "tus offset after 100000 bytes (whole chunks only)"
OFFSET=$(check 200 curl -sS -I -H "$AUTH" -H 'Tus-Resumable: 1.0.0' "$TUS_URL" | tr -d '\r' | awk 'tolower($1) == "upload-offset:" { print $2 }')
same "$OFFSET" 65536 "tus HEAD offset"
tail -c +$((OFFSET + 1)) report.pdf | check 204 curl -sS -H "$AUTH" -H 'Tus-Resumable: 1.0.0' -H "Upload-Offset: $OFFSET" -H 'Content-Type: application/offset+octet-stream' -X PATCH -T - "$TUS_URL"
same "$(header Upload-File-Sha256)" "$REPORT_SHA" "tus file SHA-256"
check 200 curl -sS -I -H "$AUTH" -H 'Tus-Resumable: 1.0.0' "$TUS_URL" | grep -i '^upload-file' > out.txt
grep -qi "^upload-file-sha256: $REPORT_SHA" out.txt || fail "tus HEAD names the file"
ok "a resumable upload by hand: POST, PATCH, HEAD, PATCH from the offset"

# ---- Notifications (the test server allows loopback webhooks; nothing listens on port 9, so
# the deliveries fail and are retried: only the API's answers are checked here) -----------------
HOOK_URL=http://localhost:9/hook
check 200 curl -sS -H "$AUTH" -X PATCH "$BASE/api/v1/me" --json '{"email":"me@example.com","notifications":{"shareDownloaded":["email","webhook"],"newSignIn":["email"]}}' > out.json
same "$(jq -r '.notifications.shareDownloaded | join(",")' out.json)" "email,webhook" "notification choices"
printf '{"url":"%s"}' "$HOOK_URL" > webhook.json
check 200 curl -sS -H "$AUTH" -H 'Content-Type: application/json' -T webhook.json "$BASE/api/v1/me/webhook" > out.json
same "$(jq -r '.secret | startswith("whsec_")' out.json)" true "webhook secret shown once"
check 202 curl -sS -H "$AUTH" "$BASE/api/v1/me/webhook/test" --json '{}' > out.json
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/me/webhook" > out.json
same "$(jq -r '.deliveries[0].type' out.json)" webhook.test "delivery log"
check 204 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/me/webhook"
check 200 curl -sS -H "$AUTH" -H 'Content-Type: application/json' -T webhook.json "$BASE/api/v1/admin/webhook" > out.json
check 202 curl -sS -H "$AUTH" "$BASE/api/v1/admin/webhook/test" --json '{}' > out.json
check 200 curl -sS -H "$AUTH" "$BASE/api/v1/admin/webhook" > out.json
check 204 curl -sS -H "$AUTH" -X DELETE "$BASE/api/v1/admin/webhook"
ok "notification settings and webhooks"

# ---- "Expose it with ngrok": the header for ngrok's browser warning (no tunnel here, so
# the server's own address stands in for the tunnel URL) ----------------------------------------
PUBLIC_URL=$BASE
check 200 curl -sS -H 'ngrok-skip-browser-warning: 1' -H "$AUTH" "$PUBLIC_URL/api/v1/me" > out.json
same "$(jq -r .username out.json)" admin "with the ngrok header"
ok "the ngrok-skip-browser-warning header is harmless"

# ---- Health and the API description ------------------------------------------------------------
check 200 curl -sS "$BASE/healthz" > out.json
check 200 curl -sS "$BASE/readyz" > out.json
check 200 curl -sS "$BASE/api/v1/openapi.json" -o openapi.json
same "$(jq -r .openapi openapi.json)" 3.1.0 "openapi version"
ok "health and the OpenAPI document"

echo "# $n checks passed"
