"""What an analyst's statement may do, decided on ClickHouse's own parse of it.

Every statement from outside the warehouse process (the HTTP interface, the dashboards'
SQL box) goes through here. The decision is never made on the text:

1. **parse** -- ClickHouse parses the text: ``SELECT parseQueryToJSON({q:String})``, the
   text bound as a parameter (it is never run as SQL). Whatever the quoting (`` `file` ``,
   ``"file"``, ``FILE``), the comments, the ``$$...$$`` strings or the whitespace, the
   result is ClickHouse's tree with names already unquoted. Several statements are a
   syntax error of the parser itself.
2. **allow-list** -- :func:`check` walks the whole tree: it must be one SELECT (WITH,
   UNION, subqueries allowed); each node type, table, function and table function must be
   on an explicit list (:data:`TABLES`, :data:`FUNCTIONS`, :data:`AGGREGATES` with
   :data:`COMBINATORS`, :data:`TABLE_FUNCTIONS` with a row cap); no ``SETTINGS``, no ``INTO
   OUTFILE`` anywhere; ``FORMAT`` only as the output format of the top statement on the
   HTTP interface (a name from :data:`OUTPUT_FORMATS`, handed to chdb's API, never to SQL).
3. **wrap** -- :func:`wrap` puts the checked tree, unchanged, as the only subquery of
   ``SELECT * FROM (<tree>) [LIMIT n] SETTINGS <scope and limits>, readonly = 1``. The
   wrapper is built by this module as a tree, not as text.
4. **run** -- the HTTP interface sends that tree to chdb in ClickHouse's JSON-AST dialect
   (``dialect = 'clickhouse_json'``): what runs is exactly the tree that was checked,
   there is no second parse of text. Other clients (the owner's ChdbClient in tests, a
   ClickHouse server in server mode) get ``formatQueryFromJSON(tree)``, ClickHouse's own
   rendering of the checked tree.

**Tenant scope: additional_table_filters, set by the server.** The wrapper's SETTINGS set
``additional_table_filters = {'tawag.cdrs': 'tenant = ''acme''', 'cdrs': ..., ...}`` for
every analyst table. ClickHouse adds the filter to every read of the table *by its
storage*, whatever the alias, the join, the CTE, the UNION or the scalar subquery. The
statement cannot change it: a SETTINGS node anywhere in its tree is refused by the
allow-list, no allowed function or table function changes settings, and on the HTTP
interface the tree that runs is the tree that was checked (JSON-AST dialect), in a
``mode=ro`` session (readonly=2: no writes). Where the session is not read-only (the
owner's ChdbClient), ``readonly = 1`` comes last in the wrapper, so even a SETTINGS node
that slipped through would be refused by ClickHouse itself (readonly=1 cannot be used
on the HTTP readers: ClickHouse forbids changing ``readonly`` away from 2). Substituting
tenant-filtered subqueries for the tables was the alternative; it was not chosen
because it changes what ``FINAL``, ``SAMPLE`` and ``tawag.cdrs.column`` mean.

**Limits** (:data:`DEFAULT_LIMITS`: max_execution_time, max_rows_to_read,
max_bytes_to_read, max_result_rows, max_memory_usage) are in the same server-built
SETTINGS, hence not liftable either; a client may only lower them.

What this does not protect: see "Threat model" in the README.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from warehouse.schema import (
    AGENT_STATES,
    AGENT_STATS,
    CALL_EVENTS,
    CALLBACKS,
    CDRS,
    ROLLUP_TABLES,
    SCHEMA_MIGRATIONS,
    TENANTS,
)
from warehouse.schema import DATABASE as schema_db

__all__ = ["TABLES", "READ_TABLES", "FUNCTIONS", "AGGREGATES", "COMBINATORS",
           "TABLE_FUNCTIONS",
           "ROW_CAP", "OUTPUT_FORMATS", "ADMIN_TABLES", "METADATA_COLUMNS", "SYSTEM_COLUMNS",
           "metadata_filters", "DEFAULT_LIMITS", "PARSE_SQL", "Refused",
           "NotASelect", "Checked", "unparsable", "check", "wrap", "tenant_filters", "valid_tenant",
           "lowered_limits"]

def _names(text: str) -> frozenset[str]:
    """The whitespace-separated names of ``text``, lower-cased."""
    return frozenset(word.lower() for word in text.split())


TABLES = (CDRS, CALL_EVENTS, AGENT_STATES, AGENT_STATS, CALLBACKS, TENANTS)
"""The documented analyst tables; each has a ``tenant`` column the scope filters on."""

READ_TABLES = (*TABLES, *ROLLUP_TABLES)
"""Readable under the same tenant scope: the analyst tables and the KPI rollups (derived
from cdrs, keyed by tenant; ``warehouse.queries.kpi`` reads them for the dashboards). The
rollups stay out of the catalogue (:func:`metadata_filters`): they are not documented."""

ADMIN_TABLES = (SCHEMA_MIGRATIONS, "system.columns")
"""Also readable by administrators (the dashboards' service user): ``tawag migrate`` asks
the running warehouse which migrations it applied, the schema browser reads the
column types. Neither holds a tenant's rows; tenant users cannot read them."""

_BARE = {t.split(".", 1)[1]: t for t in READ_TABLES}

METADATA_COLUMNS: dict[str, frozenset[str]] = {
    "system.databases": _names("name database engine engine_full comment is_external"),
    "system.tables": _names("""database name table uuid engine is_temporary engine_full
        partition_key sorting_key primary_key sampling_key comment has_own_data"""),
    "system.columns": _names("""database table name column type position default_kind
        default_expression comment is_in_partition_key is_in_sorting_key is_in_primary_key
        is_in_sampling_key compression_codec character_octet_length numeric_precision
        numeric_precision_radix numeric_scale datetime_precision"""),
    "system.settings": _names("""name value changed description min max disallowed_values
        readonly type default alias_for is_obsolete tier"""),
}
"""The catalogue a JDBC driver or DBeaver reads (``getTables``, ``getColumns``; the
settings clickhouse-connect reads when it connects), and the columns of it any user may
name. A tenant user sees only the rows of the ``tawag``
database and its analyst tables (:func:`metadata_filters`) and none of the other
columns: sizes and row counts (``total_rows``, ``data_compressed_bytes``) would tell
other tenants' volumes, paths (``data_paths``, ``metadata_path``) the host's layout."""

SYSTEM_COLUMNS = _names("""
name database engine data_path metadata_path uuid engine_full comment is_external table
is_temporary data_paths metadata_modification_time metadata_version dependencies_database
dependencies_table create_table_query as_select parameterized_view_parameters partition_key
sorting_key primary_key sampling_key unique_key skipping_indices_types storage_policy
total_rows total_bytes total_bytes_uncompressed parts active_parts total_marks
active_on_fly_data_mutations active_on_fly_alter_mutations active_on_fly_metadata_mutations
columns_descriptions_cache_size lifetime_rows lifetime_bytes has_own_data
loading_dependencies_database loading_dependencies_table loading_dependent_database
loading_dependent_table target_database target_table definer column type position
default_kind default_expression data_compressed_bytes data_uncompressed_bytes marks_bytes
is_in_partition_key is_in_sorting_key is_in_primary_key is_in_sampling_key
compression_codec character_octet_length numeric_precision numeric_precision_radix
numeric_scale datetime_precision serialization_hint statistics value changed description
min max disallowed_values readonly default alias_for is_obsolete tier
""")
"""Every column of the :data:`METADATA_COLUMNS` tables (ClickHouse 26.9; a test compares
it with chdb's). An alias may not take one of these names, so an identifier that is an
alias can never resolve to a column outside :data:`METADATA_COLUMNS`."""

TABLE_FUNCTIONS = frozenset({"numbers", "zeros"})
"""The only table functions: they generate rows and read nothing (capped by ROW_CAP)."""

ROW_CAP = 100_000_000
"""Most rows a numbers()/zeros() call may ask for; its arguments must be literals."""

AGGREGATES = _names("""
count sum avg min max any anyLast anyHeavy argMin argMax uniq uniqExact uniqCombined
uniqCombined64 uniqHLL12 uniqTheta groupArray groupUniqArray groupArraySorted
groupArrayInsertAt groupBitAnd groupBitOr groupBitXor groupConcat median medianExact
quantile quantiles quantileExact quantilesExact quantileTiming quantilesTiming
quantileExactInclusive quantileExactExclusive quantilesExactInclusive quantilesExactExclusive
quantileExactLow quantileExactHigh quantileExactWeighted
quantileTDigest quantilesTDigest quantileDeterministic quantileBFloat16 medianTiming
medianTDigest stddevPop stddevSamp varPop varSamp covarPop covarSamp corr topK
topKWeighted sumWithOverflow sumMap minMap maxMap avgWeighted simpleLinearRegression
histogram first_value last_value any_value skewPop skewSamp kurtPop kurtSamp entropy
stddevPopStable stddevSampStable varPopStable varSampStable sumKahan boundingRatio
retention windowFunnel sequenceMatch sequenceCount exponentialMovingAverage
row_number rank dense_rank percent_rank cume_dist ntile lagInFrame leadInFrame
nth_value lag lead
""")
"""Aggregate and window functions an analyst needs (compared case-insensitively)."""

COMBINATORS = ("if", "array", "distinct", "ornull", "ordefault", "merge", "state",
               "foreach", "simplestate")
"""Aggregate combinator suffixes (``countIf``, ``uniqExactIf``, ``sumArray`` ...)."""

FUNCTIONS = _names("""
plus minus multiply divide intDiv intDivOrZero modulo moduloOrZero negate abs gcd lcm
equals notEquals less greater lessOrEquals greaterOrEquals and or not xor
like notLike ilike notILike match in notIn nullIn notNullIn globalIn globalNotIn
isNull isNotNull isNotDistinctFrom coalesce ifNull nullIf assumeNotNull toNullable
if multiIf caseWithExpression lambda tuple tupleElement array arrayElement map
CAST _CAST accurateCast accurateCastOrNull toTypeName
toInt8 toInt16 toInt32 toInt64 toUInt8 toUInt16 toUInt32 toUInt64 toFloat32 toFloat64
toInt32OrZero toInt64OrZero toInt64OrNull toFloat64OrZero toFloat64OrNull toUInt64OrZero
toDecimal32 toDecimal64 toDecimal128 toString toFixedString toBool toUUID
toDate toDate32 toDateTime toDateTime64 toDateOrNull toDateTimeOrNull parseDateTimeBestEffort
parseDateTimeBestEffortOrNull parseDateTime64BestEffort parseDateTime64BestEffortOrNull
now now64 today yesterday toTimeZone timezone toUnixTimestamp fromUnixTimestamp
fromUnixTimestamp64Milli toUnixTimestamp64Milli fromUnixTimestamp64Micro
fromUnixTimestamp64Nano toUnixTimestamp64Micro toUnixTimestamp64Nano
toYear toQuarter toMonth toWeek toISOWeek toDayOfYear toDayOfMonth toDayOfWeek toHour
toMinute toSecond toStartOfYear toStartOfQuarter toStartOfMonth toStartOfWeek toMonday
toStartOfDay toStartOfHour toStartOfMinute toStartOfFiveMinutes toStartOfTenMinutes
toStartOfFifteenMinutes toStartOfInterval toLastDayOfMonth toYYYYMM toYYYYMMDD
toYYYYMMDDhhmmss dateDiff date_diff dateAdd date_add dateSub date_sub addSeconds
addMinutes addHours addDays addWeeks addMonths addYears subtractSeconds subtractMinutes
subtractHours subtractDays subtractWeeks subtractMonths subtractYears timeSlot
formatDateTime formatReadableTimeDelta age toIntervalSecond toIntervalMinute
toIntervalHour toIntervalDay toIntervalWeek toIntervalMonth toIntervalQuarter
toIntervalYear toIntervalMillisecond
length empty notEmpty lower upper lowerUTF8 upperUTF8 lengthUTF8 concat concatWithSeparator
substring substr substringUTF8 left right leftUTF8 rightUTF8 trim trimLeft trimRight
trimBoth ltrim rtrim replace replaceAll replaceOne replaceRegexpAll replaceRegexpOne
position positionCaseInsensitive locate startsWith endsWith splitByChar splitByString
splitByRegexp arrayStringConcat extract extractAll extractAllGroups reverse repeat
leftPad rightPad lpad rpad format base64Encode base64Decode hex unhex
multiSearchAny countSubstrings ngramDistance
round floor ceil ceiling trunc roundBankers sqrt pow power exp log ln log2 log10 greatest
least sign intExp2 intExp10 e pi isNaN isFinite isInfinite
arrayJoin arrayMap arrayFilter arrayExists arrayAll arrayCount arraySum arrayAvg arrayMin
arrayMax arraySort arrayReverseSort arrayDistinct arrayUniq arrayConcat arraySlice has
hasAll hasAny indexOf arrayEnumerate arrayZip arrayFirst arrayLast arrayReduce range
arrayCompact arrayFlatten emptyArrayString groupArrayMovingSum arrayCumSum arrayDifference
arrayPopBack arrayPopFront arrayPushBack arrayPushFront
mapKeys mapValues mapContains
JSONExtract JSONExtractString JSONExtractInt JSONExtractUInt JSONExtractFloat
JSONExtractBool JSONExtractRaw JSONExtractKeys JSONExtractArrayRaw
JSONExtractKeysAndValues JSONHas JSONLength JSONType isValidJSON
simpleJSONExtractString simpleJSONExtractInt simpleJSONExtractFloat simpleJSONHas
visitParamExtractString visitParamExtractInt
cityHash64 sipHash64 sipHash128 xxHash64 murmurHash3_64 MD5 SHA256 toStartOfWeek
reinterpretAsUInt128 bitAnd bitOr bitXor bitNot bitShiftLeft bitShiftRight
formatReadableSize formatReadableQuantity bar version revision displayName currentDatabase
""") | AGGREGATES
"""Scalar functions (and operators, which ClickHouse parses into functions) allowed,
compared case-insensitively: arithmetic, comparison, logic, conditional, conversion,
date/time, string, math, array, map and JSON extraction. Nothing that reads a file, a
URL, a dictionary, a table by name, a setting or the server's state -- but for what
clients ask when they connect: ``version()``, ``revision()``, ``currentDatabase()`` and
``displayName()`` (the server's name, the host name here: clickhouse-go's HTTP hello)."""

OUTPUT_FORMATS = _names("""
TabSeparated TabSeparatedRaw TabSeparatedWithNames TabSeparatedWithNamesAndTypes TSV
TSVRaw TSVWithNames TSVWithNamesAndTypes CSV CSVWithNames CSVWithNamesAndTypes JSON
JSONCompact JSONEachRow JSONCompactEachRow JSONStrings JSONLines NDJSON
JSONCompactEachRowWithNames JSONCompactEachRowWithNamesAndTypes JSONObjectEachRow
Arrow ArrowStream Parquet ORC Native RowBinary RowBinaryWithNames
RowBinaryWithNamesAndTypes Pretty PrettyCompact PrettyCompactMonoBlock PrettySpace
PrettyNoEscapes Vertical Markdown Values XML Null
""")
"""Output formats the HTTP interface renders (none of them reads a template file)."""

DEFAULT_LIMITS: dict[str, int] = {
    "max_execution_time": 60,
    "max_rows_to_read": 500_000_000,
    "max_bytes_to_read": 20_000_000_000,
    "max_result_rows": 1_000_000,
    "max_memory_usage": 2_000_000_000,
}
"""Per-statement limits the server sets in the wrapper (a client may only lower them)."""

PARSE_SQL = "SELECT parseQueryToJSON({q:String}) AS ast"
"""How the statement is parsed: ClickHouse's parser, the text bound as a parameter."""

_NODE_TYPES = frozenset({
    "SelectWithUnionQuery", "SelectIntersectExceptQuery", "SelectQuery", "ExpressionList",
    "Identifier", "TableIdentifier", "Function", "Literal", "Asterisk", "QualifiedAsterisk",
    "ColumnsRegexpMatcher", "ColumnsListMatcher", "QualifiedColumnsRegexpMatcher",
    "QualifiedColumnsListMatcher", "ColumnsTransformerList", "ColumnsExceptTransformer",
    "ColumnsReplaceTransformer", "ColumnsReplaceTransformerReplacement",
    "ColumnsApplyTransformer", "TablesInSelectQuery", "TablesInSelectQueryElement",
    "TableExpression", "TableJoin", "ArrayJoin", "Subquery", "WithElement",
    "OrderByElement", "WindowDefinition", "WindowListElement", "SampleRatio",
    "QueryParameter", "InterpolateElement",
})
"""Node types a SELECT of the analyst tables is made of; any other node is refused."""

_FORBIDDEN_KEYS = {"settings": "a SETTINGS clause", "settings_ast": "a SETTINGS clause",
                   "out_file": "INTO OUTFILE", "compression": "INTO OUTFILE COMPRESSION",
                   "format_ast": "a FORMAT clause"}
_IN_FUNCTIONS = frozenset({"in", "notin", "nullin", "notnullin", "globalin", "globalnotin",
                           "globalnullin", "globalnotnullin"})
_TENANT = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")


class Refused(ValueError):
    """The statement is not allowed; the message says why (shown to the analyst)."""


class NotASelect(Refused):
    """The statement is not a SELECT at all (a write, DDL, SHOW, SET ...)."""


@dataclass(frozen=True)
class Checked:
    """A statement that passed :func:`check`: its tree and its requested output format."""

    tree: dict[str, Any]
    output_format: str | None
    admin: bool = False
    """Checked for an unscoped administrator (system tables unrestricted)."""


def _name(node: Mapping[str, Any]) -> str:
    return str(node.get("name", ""))


def _is_aggregate(lower: str) -> bool:
    while lower not in AGGREGATES:
        for suffix in COMBINATORS:
            if lower.endswith(suffix) and len(lower) > len(suffix):
                lower = lower[:-len(suffix)]
                break
        else:
            return False
    return True


def _function_allowed(name: str) -> bool:
    lower = name.lower()
    return lower in FUNCTIONS or _is_aggregate(lower)


def _literal_uint(node: Any) -> int | None:
    if isinstance(node, dict) and node.get("type") == "Literal":
        value = node.get("value", {})
        if value.get("field_type") in ("UInt64", "Int64") and isinstance(value.get("value"),
                                                                          int):
            return int(value["value"])
    return None


def _check_table_function(node: Mapping[str, Any]) -> None:
    name = _name(node)
    if name.lower() not in TABLE_FUNCTIONS or name != name.lower():
        raise Refused(f"table function {name}() is not allowed: read the tables by name "
                      f"({', '.join(TABLES)}); numbers() and zeros() are allowed")
    args = node.get("arguments", {}).get("children", [])
    values = [_literal_uint(a) for a in args]
    if not 1 <= len(args) <= (3 if name == "numbers" else 1) or None in values:
        raise Refused(f"{name}() needs literal row counts, e.g. {name}(1000)")
    count = values[1] if len(values) >= 2 else values[0]
    if count > ROW_CAP:
        raise Refused(f"{name}() is capped at {ROW_CAP} rows")


def _check_table(name: str, parts: list[str], ctx: _Context) -> None:
    parts = parts or [name]
    qualified = ".".join(parts)
    if len(parts) == 1 and (name in ctx.ctes or name in _BARE
                            or (ctx.admin and f"{schema_db}.{name}" in ADMIN_TABLES)):
        return
    if len(parts) == 2 and (qualified in READ_TABLES or qualified in METADATA_COLUMNS
                            or (ctx.admin and qualified in ADMIN_TABLES)):
        return
    raise Refused(f"table {qualified} is not available here; tables: {', '.join(TABLES)}")


def _with_names(select: Mapping[str, Any]) -> set[str]:
    names = set()
    for element in (select.get("with") or {}).get("children", []):
        if isinstance(element, dict) and element.get("type") == "WithElement":
            names.add(_name(element))
    return names


@dataclass(frozen=True)
class _Context:
    ctes: frozenset[str]
    admin: bool


def _walk(node: Any, ctx: _Context, parent_key: str = "") -> None:
    if isinstance(node, list):
        for item in node:
            _walk(item, ctx, parent_key)
        return
    if not isinstance(node, dict):
        return
    kind = node.get("type")
    if kind is None:  # a Field value of a Literal: data, not a node
        return
    if kind not in _NODE_TYPES:
        raise NotASelect(f"{kind} is not allowed here, only one SELECT statement")
    for key, what in _FORBIDDEN_KEYS.items():
        if node.get(key) is not None:
            raise Refused(f"{what} is not allowed (the warehouse sets the limits and the "
                          "output format)")
    if node.get("is_into_outfile_with_stdout"):
        raise Refused("INTO OUTFILE is not allowed")
    if kind == "QueryParameter" and str(node.get("param_type", "")) == "Identifier":
        raise Refused("an Identifier parameter is not allowed: name the table in the text")
    if kind == "SelectQuery":
        ctx = _Context(ctx.ctes | _with_names(node), ctx.admin)
    if kind == "TableIdentifier":
        if node.get("children"):
            raise Refused("a parameter as table name is not allowed")
        _check_table(_name(node), list(node.get("name_parts") or []), ctx)
    if kind == "Function":
        name = _name(node)
        if parent_key == "table_function":
            _check_table_function(node)
        elif not _function_allowed(name):
            raise Refused(f"function {name}() is not allowed here")
        elif name.lower() in _IN_FUNCTIONS:
            args = (node.get("arguments") or {}).get("children", [])
            if len(args) == 2 and isinstance(args[1], dict) \
                    and args[1].get("type") in ("Identifier", "TableIdentifier"):
                raise Refused(f"`IN {_name(args[1])}` is not allowed: write "
                              "`IN (SELECT column FROM table)`")
    for key, value in node.items():
        if key != "type":
            _walk(value, ctx, key)


def check(tree: Mapping[str, Any], *, allow_format: bool = False,
          admin: bool = False) -> Checked:
    """The checked statement, or :class:`Refused` saying why.

    ``tree`` is ClickHouse's parse (``parseQueryToJSON``). ``allow_format``: a FORMAT
    clause on the top statement names the output format (the HTTP interface); it is
    taken off the tree and returned. ``admin``: :data:`ADMIN_TABLES` are readable too.
    """
    if not isinstance(tree, dict) or tree.get("type") != "SelectWithUnionQuery":
        kind = tree.get("type") if isinstance(tree, dict) else type(tree).__name__
        raise NotASelect(f"{kind} statements are not allowed, only one SELECT (or WITH ... "
                         "SELECT)")
    tree = copy.deepcopy(dict(tree))
    output_format = None
    fmt = tree.get("format_ast")
    if fmt is not None and allow_format and not tree.get("out_file"):
        if not (isinstance(fmt, dict) and fmt.get("type") == "Identifier"
                and _name(fmt).lower() in OUTPUT_FORMATS):
            raise Refused(f"output format {_name(fmt) if isinstance(fmt, dict) else fmt} "
                          "is not available")
        output_format = _name(fmt)
        del tree["format_ast"]
    _walk(tree, _Context(frozenset(), admin))
    _check_metadata(tree, admin=admin)
    return Checked(tree, output_format, admin)


def _tables_named(tree: Any) -> set[str]:
    """The qualified names of every TableIdentifier with two parts in ``tree``."""
    found: set[str] = set()
    if isinstance(tree, dict):
        parts = tree.get("name_parts") or []
        if tree.get("type") == "TableIdentifier" and len(parts) == 2:
            found.add(".".join(parts))
        for value in tree.values():
            found |= _tables_named(value)
    elif isinstance(tree, list):
        for item in tree:
            found |= _tables_named(item)
    return found


def _nodes(tree: Any) -> Iterable[dict[str, Any]]:
    if isinstance(tree, dict):
        if "type" in tree:
            yield tree
        for value in tree.values():
            yield from _nodes(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _nodes(item)


def _check_metadata(tree: Mapping[str, Any], *, admin: bool) -> None:
    """A statement that reads :data:`METADATA_COLUMNS` tables reads only them, and (but
    for an unscoped administrator) names only their allowed columns and its own aliases."""
    read = _tables_named(tree) & METADATA_COLUMNS.keys()
    if not read or admin:
        return
    if _tables_named(tree) & set(READ_TABLES) or any(
            node.get("type") == "TableIdentifier" and len(node.get("name_parts") or []) < 2
            for node in _nodes(tree)):
        raise Refused("a statement that reads system tables may read no other table")
    allowed = frozenset().union(*(METADATA_COLUMNS[t] for t in read))
    aliases = {str(node["alias"]).lower() for node in _nodes(tree) if node.get("alias")}
    if shadowing := sorted(aliases & SYSTEM_COLUMNS - allowed):
        raise Refused(f"alias {shadowing[0]} is not allowed here")
    for node in _nodes(tree):
        kind = node["type"]
        if kind in ("Asterisk", "QualifiedAsterisk") or kind.startswith(
                ("Columns", "QualifiedColumns")):
            raise Refused(f"name the columns of table {', '.join(sorted(read))}: no * or "
                          "COLUMNS() there")
        if kind == "Identifier":
            parts = node.get("name_parts") or [_name(node)]
            column = str(parts[-1]).lower()
            if column not in allowed and column not in aliases:
                raise Refused(f"column {parts[-1]} of {', '.join(sorted(read))} is not "
                              f"available here; columns: {', '.join(sorted(allowed))}")


def unparsable(code: int | None) -> NotASelect | None:
    """The refusal for a parse that failed with ClickHouse error ``code``, if it is one.

    ``parseQueryToJSON`` answers BAD_ARGUMENTS (36) for statements whose tree has no JSON
    form (INSERT ... VALUES, SHOW PROCESSLIST, SYSTEM ...): none of them is a SELECT.
    """
    if code == 36:
        return NotASelect("this statement is not allowed, only one SELECT (or WITH ... "
                          "SELECT)")
    return None


def valid_tenant(tenant: str) -> str:
    if not _TENANT.match(tenant):
        raise ValueError(f"not a tenant name: {tenant!r}")
    return tenant


def tenant_filters(tenant: str) -> dict[str, str]:
    """Table name (qualified and bare) -> ``tenant = '<tenant>'`` for every analyst table,
    and the :func:`metadata_filters`."""
    condition = f"tenant = '{valid_tenant(tenant)}'"
    return {**{name: condition for table in READ_TABLES
               for name in (table, table.split(".", 1)[1])}, **metadata_filters()}


def metadata_filters() -> dict[str, str]:
    """System table -> the condition keeping only the analyst tables' catalogue rows."""
    names = ", ".join(f"'{t.split('.', 1)[1]}'" for t in TABLES)
    return {"system.databases": f"name = '{schema_db}'",
            "system.tables": f"database = '{schema_db}' AND name IN ({names})",
            "system.columns": f"database = '{schema_db}' AND table IN ({names})"}


def lowered_limits(requested: Mapping[str, str | int],
                   limits: Mapping[str, int] = DEFAULT_LIMITS) -> dict[str, int]:
    """``limits`` with each requested value applied only if it is lower (and positive)."""
    out = dict(limits)
    for name, value in requested.items():
        if name not in out:
            continue
        try:
            number = int(value)
        except (TypeError, ValueError):
            continue
        if 0 < number < out[name]:
            out[name] = number
    return out


def _field(value: Any) -> dict[str, Any]:
    if isinstance(value, bool) or not isinstance(value, int | str | dict):
        raise TypeError(f"unsupported setting value {value!r}")
    if isinstance(value, int):
        return {"field_type": "UInt64", "value": value}
    if isinstance(value, str):
        return {"field_type": "String", "value": value}
    return {"field_type": "Map", "value": [
        {"field_type": "Tuple", "value": [_field(k), _field(v)]} for k, v in value.items()]}


def wrap(checked: Checked, *, tenant: str | None, limits: Mapping[str, int] = DEFAULT_LIMITS,
         row_limit: int | None = None, readonly: bool = True) -> dict[str, Any]:
    """``SELECT * FROM (<checked>) [LIMIT row_limit] SETTINGS <scope, limits>[, readonly=1]``.

    ``tenant=None`` reads every tenant (administrators). The settings are built here,
    never taken from the statement. ``readonly=False`` for a session that is read-only
    already (chdb ``mode=ro`` is readonly=2, which may not be changed, even to 1).
    """
    changes: list[tuple[str, Any]] = []
    if tenant is not None:
        changes.append(("additional_table_filters", tenant_filters(tenant)))
    elif _tables_named(checked.tree) & METADATA_COLUMNS.keys() and not checked.admin:
        changes.append(("additional_table_filters", metadata_filters()))
    changes += [(name, int(value)) for name, value in limits.items()]
    if readonly:
        changes.append(("readonly", 1))  # last: nothing in the query may change a setting
    select: dict[str, Any] = {
        "type": "SelectQuery",
        "select": {"type": "ExpressionList", "children": [{"type": "Asterisk"}]},
        "tables": {"type": "TablesInSelectQuery", "children": [{
            "type": "TablesInSelectQueryElement",
            "table_expression": {"type": "TableExpression", "subquery": {
                "type": "Subquery", "children": [checked.tree]}}}]},
        "settings": {"type": "SetQuery", "changes": [
            {"name": name, "value": _field(value)} for name, value in changes]},
    }
    if row_limit is not None:
        select["limit_length"] = {"type": "Literal", "value": _field(int(row_limit))}
    return {"type": "SelectWithUnionQuery", "union_mode": "UNION_DEFAULT",
            "list_of_selects": {"type": "ExpressionList", "children": [select]},
            "is_outfile_append": False, "is_outfile_truncate": False,
            "is_into_outfile_with_stdout": False}


def dumps(tree: Mapping[str, Any]) -> str:
    return json.dumps(tree, separators=(",", ":"), ensure_ascii=False)


def names_in(tree: Any) -> Iterable[str]:
    """Every function/table name in a tree (for tests and logs)."""
    if isinstance(tree, dict):
        if tree.get("type") in ("Function", "TableIdentifier"):
            yield _name(tree)
        for value in tree.values():
            yield from names_in(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from names_in(item)
