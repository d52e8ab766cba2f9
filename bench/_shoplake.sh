# Sourced by the bench scripts: builds shoplake and loads a generated lake.
#
# shoplake_bin: builds shoplake for PROFILE (release by default; quick = release without LTO;
# dev = a debug build, whose figures only show relative cost) unless BIN_OVERRIDE names a
# binary to use as it is, and sets BIN.
shoplake_bin() {
  PROFILE=${PROFILE:-release}
  if [ -n "${BIN_OVERRIDE:-}" ]; then
    BIN=$BIN_OVERRIDE
    [ -x "$BIN" ] || { echo "BIN_OVERRIDE=$BIN is not an executable file" >&2; exit 2; }
    echo "== using $BIN (BIN_OVERRIDE: nothing built)" >&2
    return
  fi
  echo "== building shoplake ($PROFILE)" >&2
  cargo build --profile "$PROFILE" -p shoplake >&2
  local dir=$PROFILE
  [ "$PROFILE" = dev ] && dir=debug
  BIN=${CARGO_TARGET_DIR:-target}/$dir/shoplake
}

# generated_lake DIR ROWS: generate ROWS sales rows into DIR/data and load them (ingest, then a
# run with the marts) into DIR/lake, once: an existing DIR/lake with marts is kept.
generated_lake() {
  local dir=$1 rows=$2
  if [ -d "$dir/lake/marts" ]; then
    return
  fi
  rm -rf "$dir"
  echo "== generating and loading $rows rows into $dir/lake" >&2
  "$BIN" --quiet generate --rows "$rows" --out "$dir/data" >&2
  "$BIN" --quiet --lake "$dir/lake" ingest "$dir/data" >/dev/null
  "$BIN" --quiet --lake "$dir/lake" run >/dev/null
}
