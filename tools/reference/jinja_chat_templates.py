"""Reference renderings of Jinja2 chat templates for vidlora::model::jinja (include/vidlora/model/jinja_template.hpp).

Every output is rendered by transformers' own compiled template, `_compile_jinja_template(template).render(**context)`
(jinja2's ImmutableSandboxedEnvironment with trim_blocks, lstrip_blocks, loopcontrols, the {% generation %} tag, and
transformers' raise_exception / tojson / namespace / dict). If transformers cannot be imported, jinja2 is configured
the same way here. Nothing in the fixture is hand-written: the C++ test renders each case and compares bytes.

  python3 -m venv /opt/jinjaenv
  /opt/jinjaenv/bin/pip install transformers==5.24.0 jinja2==3.1.6  # no torch needed
  /opt/jinjaenv/bin/python tools/reference/jinja_chat_templates.py

Writes tests/fixtures/model/jinja_cases.json: `cases` (name, template or chat_template, context, output), `errors`
(templates jinja2 rejects or raises on when rendered with `error_context`, with the exception class and message),
and `chat_templates` (name -> template text).
"""
import importlib.metadata
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[2]
OUT = ROOT / "tests/fixtures/model/jinja_cases.json"

try:
    from transformers.utils.chat_template_utils import _compile_jinja_template as compile_template

    BACKEND = "transformers._compile_jinja_template"
except ImportError:  # jinja2 alone, configured as transformers' _compile_jinja_template configures it
    import datetime

    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class AssistantTracker(jinja2.ext.Extension):  # {% generation %}: the body renders unchanged, as a call block
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_generation"), [], [], body).set_lineno(lineno)

        def _generation(self, caller):
            return caller()

    class UnderscoreFreeNamespace(jinja2.utils.Namespace):  # namespace() refuses underscore-prefixed attributes
        def __init__(*args, **kwargs):
            self, attrs = args[0], dict(*args[1:], **kwargs)
            for name in attrs:
                UnderscoreFreeNamespace.check(name)
            jinja2.utils.Namespace.__init__(self, attrs)

        def __setitem__(self, name, value):
            UnderscoreFreeNamespace.check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"underscore-prefixed namespace attribute {name!r}")

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def compile_template(template):
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker, jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda format: datetime.datetime.now().strftime(format)
        env.globals["dict"] = dict
        env.globals["namespace"] = UnderscoreFreeNamespace
        return env.from_string(template)

    BACKEND = "jinja2 configured as transformers' _compile_jinja_template"

MSGS = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}, {"role": "user", "content": "안녕"}]
CTX = {"x": [1, 2, 3], "d": {"a": 1, "b": [2, 3]}, "s": "Hello World", "n": None, "m": MSGS, "e": [], "t": True}

# (name, template, extra context); each renders with CTX plus the extra context.
SMALL = [
    # text, whitespace control, trim_blocks, lstrip_blocks
    ("text only", "plain text, 한국어 텍스트", {}),
    ("trailing newline removed once", "x\n\n", {}),
    ("crlf normalised", "a\r\nb\r{% if t %}\r\nc{% endif %}\r\n", {}),
    ("trim_blocks eats one newline", "a\n{% if t %}\nb\n{% endif %}\nc", {}),
    ("lstrip_blocks indented tags", "a\n    {% if t %}\n    b\n    {% endif %}\nc", {}),
    ("lstrip with tabs", "\t {% if t %}\t\n{% endif %}x", {}),
    ("lstrip at template start", "  {% if t %}x{% endif %}", {}),
    ("lstrip not mid line", "a {% if t %} b {% endif %} c", {}),
    ("no lstrip for variables", "  {{ 'x' }}  \n  {{ 'y' }}", {}),
    ("lstrip after variable line", "{{ 'a' }}\n  {% if t %}b{% endif %}", {}),
    ("no lstrip after tag without newline", "{% if t %}  {% endif %}|", {}),
    ("lstrip after trimmed newline", "{% if t %}\n  {% endif %}|", {}),
    ("minus on both sides", "a  {%- if t -%}  x  {%- endif -%}  b", {}),
    ("minus on variables", "a  {{- 'b' -}}  c", {}),
    ("minus strips newlines", "a\n\n  {{- 'b' }}\n\n", {}),
    ("minus strips ideographic space", "a\u3000{%- if t %}b{% endif %}", {}),
    ("plus disables lstrip and trim", "a\n  {%+ if t %}\nx\n  {% endif +%}\nb", {}),
    ("comment lstrip and trim", "a\n  {# comment #}\nb", {}),
    ("comment minus", "a  {#- c -#}  b", {}),
    ("comment minus then spaces newline", "a  {#- c -#}   \nb", {}),
    ("comment with tags inside", "{# {{ x }} {% if %} #}ok", {}),
    ("comment trailing spaces then newline", "{# c #}  \nx", {}),
    ("raw block", "{% raw %}{{ x }} {% if %}{% endraw %}", {}),
    ("raw keeps newline after begin", "a  {% raw %}\n {{ x }}  {% endraw %}\nb", {}),
    ("raw with minus", "a  {%- raw -%}  {{ x }}  {%- endraw -%}  b", {}),
    ("for loop lines", "{% for i in x %}\n  {{ i }}\n{% endfor %}\n", {}),
    ("for loop minus lines", "{%- for i in x -%}\n  {{ i }}\n{%- endfor %}", {}),
    ("nested blocks indentation", "{% for i in x %}\n    {% if i > 1 %}\n        [{{ i }}]\n    {% endif %}\n{% endfor %}", {}),
    ("variable end newline kept", "{{ 'a' }}\n{{ 'b' }}\n", {}),
    # literals and printing
    ("print none true false", "{{ none }} {{ None }} {{ true }} {{ False }} {{ n }} {{ t }}", {}),
    ("print ints", "{{ 0 }} {{ -5 }} {{ 1_000 }} {{ 9223372036854775807 }}", {}),
    ("print floats", "{{ 1.0 }} {{ 2.5 }} {{ 0.1 + 0.2 }} {{ 1e16 }} {{ 1.5e-5 }} {{ 0.0001 }} {{ 1/3 }} {{ 1e300 * 10 }} {{ -0.0 }} {{ 123456789.125 }}", {}),
    ("print lists", "{{ [1, 'a', none, true, 1.5] }} {{ [] }} {{ [[1], [2, [3]]] }}", {}),
    ("print tuples", "{{ (1,) }} {{ (1, 'a') }} {{ () }} {{ 1, 2 }}", {}),
    ("print dicts", "{{ {'k': 'v', 'n': [1, none]} }} {{ {} }} {{ d }} {{ {1: 'a', none: 2} }}", {}),
    ("print string reprs", "{{ [\"it's\", 'q\"', 'both\\'\"', 'tab\\there', 'nl\\n', 'back\\\\slash', '한국어', '\\x01\\x7f\\xa0\\u200b'] }}", {}),
    ("print messages", "{{ m }}", {}),
    ("print range and views", "{{ range(3) }} {{ range(1, 10, 2) }} {{ d.keys() }} {{ d.values() }} {{ d.items() }}", {}),
    ("print namespace", "{% set ns = namespace(a=1, b='x') %}{{ ns }}", {}),
    ("string escapes", "{{ 'a\\nb\\tc\\\\d\\'e\\\"f\\u00e9\\x41\\101\\U0001F600' }}|{{ \"dq\\\"\" }}|{{ '\\d' }}", {}),
    ("adjacent string literals", "{{ 'a' \"b\" 'c' }}", {}),
    ("utf8 text and slices", "{{ '한국어 텍스트'[1:3] }}|{{ '한국어'|length }}|{{ '한국어'[-1] }}|{{ '한국어'|reverse }}", {}),
    # arithmetic
    ("integer arithmetic", "{{ 7 + 3 }} {{ 7 - 10 }} {{ 7 * 3 }} {{ 7 / 2 }} {{ 6 / 3 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ 7 % 3 }} {{ -7 % 3 }} {{ 7 % -3 }} {{ 2 ** 10 }} {{ 2 ** -1 }}", {}),
    ("float arithmetic", "{{ 7.5 // 2 }} {{ -7.5 // 2 }} {{ 7.5 % 2 }} {{ -7.5 % 2 }} {{ 2.0 ** 0.5 }} {{ 1 + 1.0 }} {{ 3 * 0.1 }}", {}),
    ("unary and precedence", "{{ -2 ** 2 }} {{ -(2 ** 2) }} {{ 2 + 3 * 4 }} {{ (2 + 3) * 4 }} {{ 10 - 2 - 3 }} {{ 2 ** 3 ** 2 }} {{ +3 }} {{ - -3 }}", {}),
    ("bool arithmetic", "{{ true + 1 }} {{ true * 'ab' }} {{ false + false }} {{ -true }}", {}),
    ("string and list repetition", "{{ 'ab' * 3 }} {{ 3 * 'x' }} {{ [1] * 2 }} {{ 'a' * 0 }}|{{ 'a' * -1 }}|", {}),
    ("concatenation", "{{ 'a' + 'b' }} {{ [1] + [2, 3] }} {{ (1,) + (2,) }} {{ 'a' ~ 1 ~ none ~ true ~ 1.5 ~ [1] }} {{ missing ~ 'x' }}", {}),
    ("filter applies after unary minus", "{{ -3|abs }} {{ 1 + x|length }} {{ -2.5|int }}", {}),
    # comparisons and logic
    ("comparisons", "{{ 1 == 1.0 }} {{ 1 != 2 }} {{ 'a' < 'b' }} {{ 2 >= 2 }} {{ [1, 2] < [1, 3] }} {{ (1, 2) == [1, 2] }} {{ none == none }} {{ 'a' == 1 }} {{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }}", {}),
    ("dict equality ignores order", "{{ {'a': 1, 'b': 2} == {'b': 2, 'a': 1} }} {{ {'a': 1} == {'a': 2} }}", {}),
    ("in and not in", "{{ 'ell' in s }} {{ 'x' not in s }} {{ 2 in x }} {{ 'a' in d }} {{ 'z' in d }} {{ 1 in missing }} {{ 'b' in d.keys() }} {{ 2 in range(3) }} {{ 'hi' in m|map(attribute='content') }}", {}),
    ("and or return operands", "{{ 0 or 'x' }} {{ 'a' and 'b' }} {{ '' and 'b' }}|{{ none or [] }} {{ not x }} {{ not missing }} {{ missing or 'fallback' }}", {}),
    ("conditional expressions", "{{ 'y' if t else 'n' }} {{ 'y' if e else 'n' }} [{{ 'y' if false }}] {{ ('y' if false) is defined }} {{ 'a' if false else 'b' if true else 'c' }}", {}),
    # variables, attributes, items
    ("attribute and item access", "{{ d.a }} {{ d['b'][1] }} {{ d.b.0 }} {{ m[0].role }} {{ m[-1]['content'] }} {{ x[1] }} {{ s[0] }}", {}),
    ("missing attributes are undefined", "[{{ d.zzz }}] [{{ d['zzz'] }}] [{{ x[10] }}] [{{ n.foo }}] {{ d.zzz is defined }} {{ x[10] is undefined }} {{ s.nope is defined }}", {}),
    ("dict attribute prefers methods", "{{ {'items': 5}['items'] }} {{ {'items': 5}.items() }} {{ {'keys': 1}.keys is defined }}", {}),
    ("getitem falls back to methods", "{{ {'a': 1}['get']('a') }} {{ s['upper']() }}", {}),
    ("slices", "{{ x[1:] }} {{ x[:-1] }} {{ x[::-1] }} {{ x[::2] }} {{ x[5:] }} {{ s[::-1] }} {{ s[-5:] }} {{ x[-100:100] }} {{ (1, 2, 3)[1:] }} {{ x[2:0:-1] }}", {}),
    ("messages reversed", "{% for mm in m[::-1] %}{{ mm.content }},{% endfor %}", {}),
    # undefined
    ("undefined prints empty", "[{{ missing }}] {{ missing is defined }} {{ missing is undefined }} {{ missing|length }} {{ missing == missing }} {{ missing == none }}", {}),
    ("undefined iterates empty", "{% for i in missing %}x{% else %}empty{% endfor %} {{ missing|list }} {{ missing|join(',') }}|{{ missing|items|list }} {{ missing|reverse|list }} {{ missing|sort }}", {}),
    ("undefined through filters", "[{{ missing|upper }}{{ missing|trim }}{{ missing|string }}{{ missing|first }}{{ missing|last }}{{ missing|replace('a', 'b') }}] {{ missing|default('dflt') }}", {}),
    ("undefined tests", "{{ missing is sequence }} {{ missing is iterable }} {{ missing is mapping }} {{ missing is string }} {{ missing is none }} {{ missing is callable }} {{ missing is lower }}", {}),
    ("undefined in list repr", "{{ [missing] }}", {}),
    # if / for / set / namespace
    ("if elif else", "{% for i in [0, 1, 2, 3] %}{% if i == 0 %}zero{% elif i == 1 %}one{% elif i == 2 %}two{% else %}many{% endif %},{% endfor %}", {}),
    ("if with tuple test", "{% if 0, 0 %}tuple is true{% endif %}", {}),
    ("loop variables", "{% for i in ['a', 'b', 'c'] %}{{ loop.index }}{{ loop.index0 }}{{ loop.revindex }}{{ loop.revindex0 }}{{ loop.first }}{{ loop.last }}{{ loop.length }}[{{ loop.previtem }}|{{ loop.nextitem }}]{{ loop.depth }}{{ loop.cycle('o', 'e') }};{% endfor %}", {}),
    ("loop with filter", "{% for i in x if i > 1 %}{{ loop.index }}/{{ loop.length }}:{{ i }} {% else %}none{% endfor %}", {}),
    ("loop else", "{% for i in e %}x{% else %}empty{% endfor %}|{% for i in x if i > 5 %}x{% else %}filtered{% endfor %}", {}),
    ("loop unpacking", "{% for k, v in d.items() %}{{ k }}={{ v }};{% endfor %}{% for a, b in [[1, 2], (3, 4), 'xy'] %}{{ a }}{{ b }} {% endfor %}{% for (a, b) in d|items %}{{ a }}{% endfor %}", {}),
    ("loop over dict and string", "{% for k in d %}{{ k }}{% endfor %} {% for c in '한국' %}[{{ c }}]{% endfor %}", {}),
    ("nested loops", "{% for i in x %}{% for j in x %}{% if j > i %}{% break %}{% endif %}{{ i }}{{ j }}{{ loop.index }} {% endfor %}{{ loop.index }};{% endfor %}", {}),
    ("break and continue", "{% for i in range(10) %}{% if i is odd %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% else %}E{% endfor %}", {}),
    ("set in loop is per iteration", "{% set y = 0 %}{% for i in x %}{{ y }}{% set y = y + 1 %}{{ y }},{% endfor %}{{ y }}", {}),
    ("set in if is visible", "{% if t %}{% set y = 5 %}{% endif %}{{ y }}", {}),
    ("loop variable does not leak", "{% set i = 'outer' %}{% for i in x %}{% endfor %}{{ i }} [{{ loop }}]", {}),
    ("set tuple unpacking", "{% set a, b = 1, 'two' %}{{ a }} {{ b }} {% set c = 1, 2 %}{{ c }}", {}),
    ("set block", "{% set block %}\n  inner {{ x|length }}\n{% endset %}[{{ block }}]", {}),
    ("namespace counters", "{% set ns = namespace(count=0, seen=[]) %}{% for i in x %}{% set ns.count = ns.count + i %}{% set ns.seen = ns.seen + [i] %}{% endfor %}{{ ns.count }} {{ ns.seen }} {{ ns.missing is defined }}", {}),
    ("namespace from dict", "{% set ns = namespace({'a': 1}, b=2) %}{{ ns.a }}{{ ns.b }}", {}),
    ("dict global", "{{ dict(a=1, b='x') }} {{ dict({'a': 1}, c=3) }}", {}),
    ("generation block", "{% for mm in m %}{% if mm.role == 'assistant' %}{% generation %}{{ mm.content }} {{ loop.index }}{% set inner = 1 %}{% endgeneration %}{% else %}{{ mm.content }}{% endif %}[{{ inner }}]{% endfor %}", {}),
    ("generation whitespace", "A\n  {%- generation -%}\n  body\n  {%- endgeneration %}\nB", {}),
    # tests
    ("type tests", "{{ 1 is number }} {{ 1.5 is float }} {{ 1 is integer }} {{ true is integer }} {{ true is number }} {{ true is boolean }} {{ 's' is string }} {{ d is mapping }} {{ x is mapping }} {{ n is none }} {{ x is iterable }} {{ 5 is iterable }} {{ s is sequence }} {{ d is sequence }} {{ 5 is sequence }}", {}),
    ("value tests", "{{ true is true }} {{ 1 is true }} {{ false is false }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 9 is divisibleby(2) }} {{ 2 is in x }} {{ 2 is in [5] }} {{ 'abc' is lower }} {{ 'ABC' is upper }} {{ '1' is lower }} {{ 'aB' is upper }}", {}),
    ("comparison tests", "{{ 1 is eq 1 }} {{ 1 is equalto 2 }} {{ 1 is ne 2 }} {{ 1 is lt 2 }} {{ 2 is le 2 }} {{ 3 is gt 2 }} {{ 2 is ge 3 }} {{ 2 is greaterthan 1 }} {{ 2 is lessthan 1 }} {{ 'a' is sameas 'a' if false else 2 is eq 2 }}", {}),
    ("negated tests", "{{ 1 is not none }} {{ missing is not defined }} {{ s is not string }} {{ not 1 is none }}", {}),
    ("sameas and callable", "{{ none is sameas none }} {{ false is sameas false }} {{ 0 is sameas false }} {{ s.upper is callable }} {{ s is callable }} {{ 'upper' is filter }} {{ 'odd' is test }} {{ 'nope' is filter }}", {}),
    # filters
    ("length and count", "{{ x|length }} {{ s|count }} {{ d|length }} {{ ''|length }} {{ '한국어'|length }} {{ range(5)|length }} {{ d.items()|length }}", {}),
    ("first and last", "{{ x|first }} {{ x|last }} {{ s|first }} {{ s|last }} {{ d|first }} {{ d|last }} [{{ e|first }}] {{ (x|select('odd'))|first }}", {}),
    ("trim upper lower capitalize title", "[{{ '  a b \\n'|trim }}] [{{ 'xxaxx'|trim('x') }}] {{ s|upper }} {{ s|lower }} {{ 'hELLO wORLD'|capitalize }} {{ 'hello wORLD-foo (bar) [baz] <q> a_b'|title }} {{ '한국어 text'|upper }}", {}),
    ("default filter", "{{ missing|default('d') }} {{ missing|d('d2') }} [{{ ''|default('e') }}] {{ ''|default('e', true) }} {{ none|default('n') }} {{ none|default('n', boolean=true) }} {{ 0|d(5, true) }} {{ missing|default }}|", {}),
    ("join filter", "{{ x|join }} {{ x|join(', ') }} {{ m|join('|', attribute='role') }} {{ [1, none, 'a']|join('-') }} {{ '한국'|join('.') }}", {}),
    ("replace filter", "{{ s|replace('o', '0') }} {{ 'aaaa'|replace('a', 'b', 2) }} {{ 'ab'|replace('', '-') }} {{ 12|replace('1', 'x') }}", {}),
    ("list string int float abs", "{{ 'ab'|list }} {{ d|list }} {{ 5|string }}{{ none|string }} {{ '42'|int }} {{ ' 42 '|int }} {{ '4.7'|int }} {{ 'x'|int }} {{ 'x'|int(-1) }} {{ 4.9|int }} {{ -4.9|int }} {{ true|int }} {{ none|int }} {{ '1e3'|int }} {{ '1_000'|int }} {{ 'nan'|int }} {{ 'inf'|int(7) }}", {}),
    ("float filter", "{{ '2.5'|float }} {{ 3|float }} {{ 'x'|float }} {{ 'x'|float(1.5) }} {{ ' -1e-3 '|float }} {{ 'inf'|float }} {{ none|float }} {{ true|float }}", {}),
    ("abs filter", "{{ -3|abs }} {{ (-2.5)|abs }} {{ 4|abs }} {{ true|abs }}", {}),
    ("reverse filter", "{{ x|reverse|list }} {{ s|reverse }} {{ (1, 2)|reverse|list }} {{ d|reverse|list }} {{ x|select('odd')|reverse }}", {}),
    ("sort filter", "{{ [3, 1, 2]|sort }} {{ ['b', 'A', 'c']|sort }} {{ ['b', 'A', 'c']|sort(case_sensitive=true) }} {{ [3, 1, 2]|sort(reverse=true) }} {{ m|sort(attribute='content')|map(attribute='content')|list }} {{ [{'a': 2, 'b': 1}, {'a': 1, 'b': 2}, {'a': 1, 'b': 1}]|sort(attribute='a,b') }}", {}),
    ("unique filter", "{{ [1, 2, 1, 3, 2]|unique|list }} {{ ['a', 'A', 'b']|unique|list }} {{ ['a', 'A', 'b']|unique(case_sensitive=true)|list }} {{ m|unique(attribute='role')|map(attribute='content')|list }}", {}),
    ("items filter", "{{ d|items|list }} {% for k, v in {'x': 1}|items %}{{ k }}{{ v }}{% endfor %}", {}),
    ("selectattr and rejectattr", "{{ m|selectattr('role', 'equalto', 'user')|map(attribute='content')|join(',') }} {{ m|rejectattr('role', 'eq', 'user')|list }} {{ [{'a': 1}, {'a': 0}, {}]|selectattr('a')|list }} {{ m|selectattr('role', '==', 'assistant')|list|length }} {{ m|selectattr('missing', 'undefined')|list|length }}", {}),
    ("select and reject", "{{ x|select('odd')|list }} {{ x|reject('odd')|list }} {{ [0, 1, '', 'a', none]|select|list }} {{ x|select('divisibleby', 3)|list }} {{ x|select('in', [1, 3])|list }} {{ x|select('gt', 1)|list }}", {}),
    ("map filter", "{{ m|map(attribute='role')|list }} {{ ['a', 'b']|map('upper')|list }} {{ m|map(attribute='nope', default='dflt')|list }} {{ [[1, 2], [3]]|map('length')|list }} {{ ['a', 'b']|map('replace', 'a', 'z')|join }} {{ [{'p': {'q': 5}}]|map(attribute='p.q')|list }} {{ [[7, 8]]|map(attribute='1')|list }}", {}),
    ("generators are one shot", "{% set g = x|select('odd') %}{% for a in g %}{{ a }}{% endfor %};{% for a in g %}{{ a }}{% endfor %};{{ g|list }}", {}),
    ("generator is truthy", "{% if e|select %}truthy{% endif %}", {}),
    ("tojson filter", "{{ m|tojson }} {{ d|tojson }} {{ 'q\"\\\\/\\n\\t\\u0001é한'|tojson }} {{ none|tojson }} {{ [true, 1.0, 1e20, 2]|tojson }} {{ (1, 'a')|tojson }} {{ {1: 'int key', none: 'n', true: 'b'}|tojson }}", {}),
    ("tojson options", "{{ d|tojson(indent=2) }}\n{{ {'b': 1, 'a': {'c': [], 'd': {}}}|tojson(sort_keys=true) }}\n{{ '한'|tojson(ensure_ascii=true) }} {{ '😀'|tojson(true) }} {{ d|tojson(separators=(',', ':')) }} {{ x|tojson(indent=0) }} {{ d|tojson(indent='\\t') }}", {}),
    ("indent filter", "[{{ 'a\\nb\\n\\nc'|indent }}] [{{ 'a\\nb'|indent(2, true) }}] [{{ 'a\\n\\nb'|indent(width='> ', blank=true) }}] [{{ 'one'|indent(first=true) }}]", {}),
    ("escape and safe", "{{ '<a href=\"x\">&\\'</a>'|e }} {{ '<b>'|escape }} {{ '<i>'|safe }} {{ 5|safe }}", {}),
    ("markup strings", "{{ ['<a>'|e, 'b'|safe] }} {{ 'x'|e is escaped }} {{ 'x' is escaped }} {{ '<'|e|e }} {{ '<'|e ~ '<' }} {{ ('<'|e)|length }} {{ '<b>'|safe|string }} {{ '<b>'|e|tojson }} {{ '<'|e == '&lt;' }}", {}),
    ("attr filter", "{{ d|attr('a') is defined }} {{ s|attr('upper') is callable }}", {}),
    ("chained filters", "{{ m|map(attribute='content')|map('upper')|select('ne', 'YO')|list|join(' / ') }}", {}),
    # methods
    ("string methods", "{{ s.upper() }} {{ s.lower() }} [{{ '  x  '.strip() }}] [{{ '  x  '.lstrip() }}] [{{ '  x  '.rstrip() }}] [{{ '\\n\\nx\\n'.strip('\\n') }}] {{ 'xxhixx'.strip('x') }} {{ s.startswith('He') }} {{ s.endswith(('x', 'ld')) }} {{ s.replace('l', 'L') }} {{ s.replace('l', 'L', 1) }} {{ 'hello world'.title() }} {{ 'hELLO'.capitalize() }} {{ ', '.join(['a', 'b']) }} {{ s.find('o') }} {{ '한국어'.find('어') }} {{ s.find('z') }} {{ s.count('l') }} {{ s.count('') }}", {}),
    ("split method", "{{ s.split() }} {{ ' a  b '.split() }} {{ ' a  b '.split(none, 1) }} {{ 'a,b,,c'.split(',') }} {{ 'a,b,c'.split(',', 1) }} {{ 'a,b'.split(sep=',') }} {{ ''.split() }} {{ ''.split(',') }} {{ '<think>r</think>answer'.split('</think>')[-1] }}", {}),
    ("dict methods", "{{ d.get('a') }} {{ d.get('zz') }} {{ d.get('zz', 'dflt') }} {{ d.keys()|list }} {{ d.values()|list }} {{ d.items()|list }} {% for k, v in d.items() %}{{ k }}{% endfor %}", {}),
    ("qwen3 style reasoning split", "{% set c = '<think>\\nplan\\n</think>\\n\\nanswer' %}{{ c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}|{{ c.split('</think>')[-1].lstrip('\\n') }}", {}),
    # range
    ("range", "{{ range(3)|list }} {{ range(1, 7, 2)|list }} {{ range(5, 0, -2)|list }} {{ range(0)|list }} {% for i in range(2) %}{{ i }}{% endfor %} {{ range(4)[1] }} {{ range(4)[-1] }}", {}),
    # UTF-8
    ("korean content", "{% for mm in m %}{{ mm.role }}: {{ mm.content }}\n{% endfor %}{{ '파란 원이 움직인다.'|length }}", {}),
    ("korean in dict repr and json", "{{ {'말': '안녕'} }} {{ {'말': '안녕'}|tojson }}", {"extra": 1}),
    # context values
    ("context types", "{{ i }} {{ f }} {{ b }} {{ nested.a[1].b }} {{ nested }}", {"i": 42, "f": 2.5, "b": False, "nested": {"a": [0, {"b": "deep"}]}}),
    ("raise_exception not reached", "{% if false %}{{ raise_exception('never') }}{% endif %}ok", {}),
    # a frame's names stored before any reference start undefined (jinja2's symbol tracking), hiding the context
    ("stored later at the top level", "{% for i in [1] %}[{{ x }}|{{ x is defined }}]{% endfor %}{% set x = 2 %}{{ x }}", {"x": 5}),
    ("stored later by unpacking, a set block, a macro", "{% for i in [1] %}[{{ x }}{{ y }}{{ z }}{{ k is defined }}]{% endfor %}{% set x, y = 1, 2 %}{% set z %}b{% endset %}{% macro k() %}{% endmacro %}", {"x": 5, "y": 7, "z": 3, "k": 1}),
    ("read at the top level first resolves the context", "{{ x }}{% for i in [1] %}[{{ x }}]{% endfor %}{% set x = 2 %}{% if true %}{{ y }}{% endif %}{% for i in [1] %}[{{ y }}]{% endfor %}{% set y = 3 %}{% set z = z %}{{ z }}", {"x": 5, "y": 7, "z": 4}),
    ("stored in if branches resolves the context", "{% for i in [1] %}[{{ x }}{{ y }}]{% endfor %}{% if t %}{% set x = 1 %}{% else %}{% set x = 2 %}{% endif %}{% if t %}{% set y = 1 %}{% endif %}", {"x": 5, "y": 7, "t": False}),
    ("loop targets are not top-level stores", "{% for i in [1] %}[{{ x }}]{% endfor %}{% for x in [3] %}{% endfor %}{% set ns2 = namespace(a=0) %}{% for i in [1] %}[{{ y }}]{% endfor %}{% set ns2.a = y %}", {"x": 5, "y": 7}),
    ("filters, generation and macro defaults see the undefined name", "{% for i in [1, 2] if x %}[{{ i }}]{% endfor %}{% generation %}[{{ x }}]{% endgeneration %}{% macro m(a=x) %}[{{ a }}]{% endmacro %}{{ m() }}{% set x = 0 %}", {"x": 5}),
    ("nested frames start their own stores undefined", "{% for i in [1] %}{% for j in [1] %}[{{ x }}]{% endfor %}{% set x = 3 %}{% endfor %}{% macro m() %}{% for i in [1] %}({{ y }}){% endfor %}{% set y = 3 %}{% endmacro %}{{ m() }}{% set s = 1 %}{% for i in [1] %}{% for j in [1] %}<{{ s }}>{% endfor %}{% set s = 3 %}{% endfor %}", {"x": 5, "y": 7}),
    ("a nested store aliases a name the enclosing frame reads", "{{ y }}{% macro m() %}{% for i in [1] %}({{ y }}){% endfor %}{% set y = 3 %}{% endmacro %}{{ m() }}{% for i in [1] %}{% for j in [1] %}[{{ x }}]{% endfor %}{% set x = 3 %}{% endfor %}{{ x }}", {"x": 5, "y": 7}),
    ("a macro default reads a name its body stores later", "{% macro m(a=x) %}[{{ a }}]{% set x = 1 %}[{{ a }}{{ x }}]{% endmacro %}{{ m() }}{{ m(2) }}{% macro k(a=x) %}{% for i in [1] %}{% for j in [1] %}[{{ x }}]{% endfor %}{% set x = 1 %}{% endfor %}{% endmacro %}{{ k() }}", {"x": 5}),
    # macros
    ("macro call and defaults", "{% macro pair(a, b=a + 1, c='z') %}{{ a }}-{{ b }}-{{ c }}{% endmacro %}{{ pair(1) }}|{{ pair(1, 5) }}|{{ pair(b=3, a=2) }}|{{ pair(1, c=none) }}|{{ pair(c=[], a=7) }}", {}),
    ("macro output is a str", "{% macro m(x) %}  <{{ x }}>  {% endmacro %}[{{ m(1)|trim }}] {{ m(2) is string }} {{ m(3) ~ '!' }} {{ (m(4) + '?')|length }} {{ m(5).strip().startswith('<') }} {{ m(6)|length }}", {}),
    ("macro reads the top level when it runs", "{% set x = 1 %}{% macro m() %}{{ x }}|{{ y }}|{{ s }}{% endmacro %}{% set x = 2 %}{% set y = 'late' %}{{ m() }}", {}),
    ("macro does not see the caller's loop", "{% set x = 'top' %}{% macro m() %}[{{ x }}{{ i }}{{ loop is defined }}]{% endmacro %}{% for x in [7] %}{% for i in [8] %}{% set z = 9 %}{{ m() }}{% endfor %}{% endfor %}", {}),
    ("macro sets stay local", "{% set x = 1 %}{% macro m() %}{{ x }}{% set x = 3 %}{{ x }}{% set w = 4 %}{% endmacro %}{{ m() }}{{ x }}{{ w is defined }}", {}),
    ("macro changes a namespace", "{% set ns = namespace(n=0) %}{% macro bump(k=1) %}{% set ns.n = ns.n + k %}{{ ns.n }}{% endmacro %}{{ bump() }}{{ bump(10) }}|{{ ns.n }}", {}),
    ("macro loops and breaks", "{% macro firsts(items, limit) %}{% for i in items %}{% if loop.index > limit %}{% break %}{% endif %}{{ i }}{{ loop.index }} {% endfor %}{% endmacro %}{% for n in [1, 2] %}{{ firsts(x, n) }};{{ loop.index }} {% endfor %}", {}),
    ("macro calls macros and itself", "{% macro leaf(v) %}<{{ v }}>{% endmacro %}{% macro tree(n) %}{% if n > 0 %}{{ leaf(n) }}{{ tree(n - 1) }}{% endif %}{% endmacro %}{{ tree(3) }}", {}),
    ("macro redefined", "{% macro m() %}a{% endmacro %}{{ m() }}{% macro m() %}b{% endmacro %}{{ m() }}", {}),
    ("macro inside if at top level", "{% if t %}{% macro m(v) %}{{ v|upper }}{% endmacro %}{% endif %}{{ m('x') }}", {}),
    ("macro value", "{% macro m() %}x{% endmacro %}{{ m }} {{ [m] }} {{ m is callable }} {{ m is defined }}{% set f = m %}{{ f() }}", {}),
    ("macro default reads no later parameter", "{% set b = 5 %}{% macro m(a=b, b=1) %}[{{ a }}][{{ b }}]{% endmacro %}{{ m() }}{% macro k(p=q is defined, q=1) %}{{ p }}{% endmacro %}{{ k() }}{% macro own(s=s) %}[{{ s }}]{% endmacro %}{{ own() }}{{ own(2) }}", {}),
    ("macro missing parameter is undefined", "{% macro m(a, b) %}[{{ a }}][{{ b }}][{{ b is defined }}]{% endmacro %}{{ m(1) }}", {}),
    ("macro whitespace control", "{%- macro m(content, flag, extra=false) %}\n    {%- if content is string %}\n        {{- content }}\n    {%- else %}\n        {%- for item in content %}\n            {{- item.text }}\n        {%- endfor %}\n    {%- endif %}\n{%- endmacro %}\n{{- m('hi', true) }}\n{{ m([{'text': 'a'}, {'text': 'b'}], false, extra=true) }}\n", {}),
    ("qwen3-vl style macro template", "{%- set image_count = namespace(value=0) %}\n{%- set video_count = namespace(value=0) %}\n{%- macro render_content(content, do_vision_count) %}\n    {%- if content is string %}\n        {{- content }}\n    {%- else %}\n        {%- for item in content %}\n            {%- if 'image' in item or item.type == 'image' %}\n                {%- if do_vision_count %}\n                    {%- set image_count.value = image_count.value + 1 %}\n                {%- endif %}\n                {%- if add_vision_id %}Picture {{ image_count.value }}: {% endif -%}\n                <|vision_start|><|image_pad|><|vision_end|>\n            {%- elif 'video' in item or item.type == 'video' %}\n                {%- if do_vision_count %}\n                    {%- set video_count.value = video_count.value + 1 %}\n                {%- endif %}\n                {%- if add_vision_id %}Video {{ video_count.value }}: {% endif -%}\n                <|vision_start|><|video_pad|><|vision_end|>\n            {%- elif 'text' in item %}\n                {{- item.text }}\n            {%- endif %}\n        {%- endfor %}\n    {%- endif %}\n{%- endmacro %}\n{%- if conversation[0].role == 'system' %}\n    {{- '<|im_start|>system\\n' + render_content(conversation[0].content, false) + '<|im_end|>\\n' }}\n{%- endif %}\n{%- set ns = namespace(last_user=-1) %}\n{%- for message in conversation[::-1] %}\n    {%- if ns.last_user < 0 and message.role == 'user' %}\n        {%- set content = render_content(message.content, false) %}\n        {%- if not content.startswith('<tool_response>') %}\n            {%- set ns.last_user = (conversation|length - 1) - loop.index0 %}\n        {%- endif %}\n    {%- endif %}\n{%- endfor %}\n{%- for message in conversation %}\n    {%- set content = render_content(message.content, True) %}\n    {%- if message.role == 'user' or (message.role == 'system' and not loop.first) %}\n        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}\n    {%- elif message.role == 'assistant' %}\n        {{- '<|im_start|>assistant\\n' + content + ('' if loop.index0 > ns.last_user else '') + '<|im_end|>\\n' }}\n    {%- endif %}\n{%- endfor %}\n{{- 'last user: ' ~ ns.last_user ~ ', images ' ~ image_count.value ~ ', videos ' ~ video_count.value }}", {"add_vision_id": True, "conversation": [{"role": "system", "content": [{"type": "text", "text": "Describe."}]}, {"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "둘을 비교하세요."}]}, {"role": "assistant", "content": "같습니다."}, {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "이것은?"}]}]}),
]

# Templates jinja2 rejects at parse time or raises on while rendering; the C++ must throw too.
ERRORS = [
    ("unknown tag", "{% frobnicate %}"),
    ("unclosed if", "{% if true %}x"),
    ("unclosed for", "{% for i in x %}x"),
    ("stray endfor", "{% endfor %}"),
    ("else without if", "{% else %}"),
    ("unterminated string", "{{ 'abc }}"),
    ("unterminated comment", "{# never closed"),
    ("unbalanced paren", "{{ (1 }}"),
    ("unexpected closing bracket", "{{ 1] }}"),
    ("empty expression", "{{ }}"),
    ("dangling operator", "{{ 1 + }}"),
    ("if without test", "{% if %}x{% endif %}"),
    ("for without in", "{% for x %}{% endfor %}"),
    ("assign to literal", "{% set 1 = 2 %}"),
    ("unknown filter", "{{ x|nosuchfilter }}"),
    ("unknown test", "{{ x is nosuchtest }}"),
    ("break outside loop", "{% break %}"),
    ("continue in generation in loop", "{% for i in x %}{% generation %}{% continue %}{% endgeneration %}{% endfor %}"),
    ("chained is tests", "{{ 1 is number is number }}"),
    ("attribute of undefined", "{{ missing.attr }}"),
    ("item of undefined", "{{ missing['k'] }}"),
    ("nested undefined attribute", "{{ d.zzz.yyy }}"),
    ("call undefined", "{{ missing() }}"),
    ("arithmetic with undefined", "{{ missing + 1 }}"),
    ("negate undefined", "{{ -missing }}"),
    ("compare undefined", "{{ missing < 1 }}"),
    ("undefined to int", "{{ missing|int }}"),
    ("undefined to json", "{{ missing|tojson }}"),
    ("undefined indent", "{{ missing|indent }}"),
    ("undefined is odd", "{{ missing is odd }}"),
    ("slice undefined", "{{ missing[1:] }}"),
    ("string plus int", "{{ 'a' + 1 }}"),
    ("list plus tuple", "{{ [1] + (2,) }}"),
    ("int plus none", "{{ 1 + none }}"),
    ("division by zero", "{{ 1 / 0 }}"),
    ("floor division by zero", "{{ 1 // 0 }}"),
    ("modulo by zero", "{{ 1 % 0 }}"),
    ("string percent formatting", "{{ 'a' % 1 }}"),
    ("ordering str and int", "{{ 'a' < 1 }}"),
    ("ordering list and str", "{{ [1] < 'a' }}"),
    ("in string with int", "{{ 1 in 'abc' }}"),
    ("in int", "{{ 1 in 5 }}"),
    ("unhashable dict key", "{{ {[1]: 2} }}"),
    ("length of int", "{{ 5|length }}"),
    ("length of generator", "{{ x|select('odd')|length }}"),
    ("last of generator", "{{ x|select('odd')|last }}"),
    ("iterate an int", "{% for i in 5 %}{% endfor %}"),
    ("unpack too many", "{% for a, b in [[1, 2, 3]] %}{% endfor %}"),
    ("unpack too few", "{% set a, b = [1] %}"),
    ("items of a list", "{{ x|items|list }}"),
    ("reverse of int", "{{ 5|reverse }}"),
    ("raise_exception", "{{ raise_exception('bad input') }}"),
    ("list append", "{{ x.append(4) }}"),
    ("dict pop", "{{ d.pop('a') }}"),
    ("dict update", "{{ d.update({'c': 1}) }}"),
    ("list sort method", "{{ x.sort() }}"),
    ("set attribute on non namespace", "{% set d.a = 1 %}"),
    ("underscore namespace attribute", "{% set ns = namespace() %}{% set ns._x = 1 %}"),
    ("underscore namespace argument", "{{ namespace(_x=1) }}"),
    ("slice step zero", "{{ x[::0] }}"),
    ("slice a dict", "{{ d[1:] }}"),
    ("slice with string", "{{ x['a':] }}"),
    ("call a string", "{{ s() }}"),
    ("too many values in range", "{{ range(200000)|list|length }}"),
    ("str join with ints", "{{ ','.join([1, 2]) }}"),
    ("startswith with int", "{{ s.startswith(1) }}"),
    ("split empty separator", "{{ s.split('') }}"),
    ("map without arguments", "{{ x|map|list }}"),
    ("selectattr without attribute", "{{ x|selectattr|list }}"),
    ("select unknown test", "{{ x|select('nosuchtest')|list }}"),
    ("map unknown filter", "{{ x|map('nosuchfilter')|list }}"),
    ("unexpected filter keyword", "{{ x|join(sep=',') }}"),
    ("too many filter arguments", "{{ s|upper(1) }}"),
    ("missing test argument", "{{ 1 is divisibleby }}"),
    ("tojson of generator", "{{ x|select('odd')|tojson }}"),
    ("tojson unsupported key", "{{ {(1, 2): 3}|tojson }}"),
    ("sort mixed types", "{{ [1, 'a']|sort }}"),
    ("abs of string", "{{ 'a'|abs }}"),
    ("negate string", "{{ -'a' }}"),
    ("filter applies to the negated list", "{{ - x|length }}"),
    ("dict get without arguments", "{{ d.get() }}"),
    ("loop cycle without items", "{% for i in x %}{{ loop.cycle() }}{% endfor %}"),
    ("star arguments", "{{ dict(*x) }}"),
    ("macro too many arguments", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, 2) }}"),
    ("macro unknown keyword", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(c=2) }}"),
    ("macro keyword for a positional parameter", "{% macro m(a) %}{{ a }}{% endmacro %}{{ m(1, a=2) }}"),
    ("macro keyword error before extra arguments", "{% macro m(a) %}{% endmacro %}{{ m(1, 2, z=3) }}"),
    ("macro non-default after default", "{% macro m(a=1, b) %}{% endmacro %}"),
    ("macro duplicate parameter", "{% macro m(a, a) %}{% endmacro %}"),
    ("macro unclosed", "{% macro m() %}x"),
    ("macro called before its definition", "{{ m() }}{% macro m() %}a{% endmacro %}"),
    ("macro missing parameter used", "{% macro m(a) %}{{ a.b }}{% endmacro %}{{ m() }}"),
    ("macro sees no loop", "{% macro m() %}{{ loop.index }}{% endmacro %}{% for i in x %}{{ m() }}{% endfor %}"),
    ("stored later at the top level hides the context", "{% for i in [1] %}[{{ ns.a }}]{% endfor %}{% set ns = namespace(a=1) %}"),
    ("set loop inside a for loop", "{% for i in [1] %}{% if true %}{% set loop = 1 %}{% endif %}{% endfor %}"),
    ("set loop inside a generation block in a for loop", "{% for i in [1] %}{% generation %}{% set loop = 1 %}{% endgeneration %}{% endfor %}"),
    ("macro named true", "{% macro true() %}x{% endmacro %}"),
    ("macro parameter named none", "{% macro m(none) %}{{ none }}{% endmacro %}{{ m(1) }}"),
    ("break in macro outside its loops", "{% for i in x %}{% macro m() %}{% break %}{% endmacro %}{% endfor %}"),
]


def read_template(relative):
    return (ROOT / relative).read_text(encoding="utf-8")


# Chat templates: the repository's two fixture directories' (the processor tests'), and five as the Hub ships them
# (tests/fixtures/model/hub_chat_templates/, whose README says where each text was taken from).
HUB = "tests/fixtures/model/hub_chat_templates/"
CHAT_TEMPLATES = {
    "llava_next_video_hf": read_template("tests/fixtures/model/llava_next_video_hf/chat_template.jinja"),
    "llava_qwen_hf": read_template("tests/fixtures/model/llava_qwen_hf/chat_template.jinja"),
    "qwen2_vl_7b_instruct": read_template(HUB + "qwen2_vl_7b_instruct.jinja"),
    "qwen2_5_7b_instruct": read_template(HUB + "qwen2_5_7b_instruct.jinja"),
    "qwen3_8b": read_template(HUB + "qwen3_8b.jinja"),
    "qwen3_8b_first_release": read_template(HUB + "qwen3_8b_first_release.jinja"),
    "llava_onevision_qwen2_7b_ov_hf": read_template(HUB + "llava_onevision_qwen2_7b_ov_hf.jinja"),
}

VIDEO_TEXT = [
    {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "영상을 설명하세요."}]},
]
SYSTEM_VIDEO_ANSWER = [
    {"role": "system", "content": [{"type": "text", "text": "You describe videos."}]},
    {"role": "user", "content": [{"type": "text", "text": "What happens?"}, {"type": "video", "video": "clip.mp4"}]},
    {"role": "assistant", "content": [{"type": "text", "text": "파란 원이 왼쪽에서 오른쪽으로 움직인다."}]},
]
IMAGE_AND_VIDEO = [
    {"role": "user", "content": [{"type": "image"}, {"type": "video"}, {"type": "text", "text": "Compare them."}]},
    {"role": "assistant", "content": [{"type": "text", "text": "They match."}]},
    {"role": "user", "content": [{"type": "video"}, {"type": "text", "text": "And this one?"}]},
]
PLAIN_STRINGS = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Describe the clip."},
    {"role": "assistant", "content": "A red square spins."},
    {"role": "user", "content": "한국어로 다시."},
]
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather for a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]
TOOL_CALLS = [
    {"role": "system", "content": "Use tools."},
    {"role": "user", "content": "서울 날씨?"},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [{"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Seoul"}}}],
    },
    {"role": "tool", "content": "{\"temp\": 21}"},
    {"role": "tool", "content": "<tool_response>second</tool_response>"},
    {"role": "assistant", "content": "<think>\nIt is mild.\n</think>\n\n21도입니다."},
]
THINKING = [
    {"role": "user", "content": "1+1?"},
    {"role": "assistant", "content": "<think>\nadd\n</think>\n\n2", "reasoning_content": None},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4", "reasoning_content": "trivial"},
]

CHAT_RUNS = [
    ("llava_next_video_hf", ["video_text", "system_video_answer", "image_and_video", "plain_strings"], {}),
    ("llava_qwen_hf", ["video_text", "system_video_answer", "image_and_video", "plain_strings"], {}),
    ("qwen2_vl_7b_instruct", ["video_text", "system_video_answer", "image_and_video", "plain_strings"], {}),
    ("qwen2_vl_7b_instruct", ["image_and_video", "system_video_answer"], {"add_vision_id": True}),
    ("qwen2_5_7b_instruct", ["plain_strings", "tool_calls_no_thinking"], {}),
    ("qwen2_5_7b_instruct", ["plain_strings", "tool_calls_no_thinking"], {"tools": TOOLS}),
    ("qwen3_8b", ["plain_strings", "tool_calls", "thinking", "video_text"], {}),
    ("qwen3_8b", ["tool_calls"], {"tools": TOOLS}),
    ("qwen3_8b", ["thinking"], {"enable_thinking": False}),
    ("qwen3_8b_first_release", ["plain_strings", "tool_calls", "thinking"], {}),
    ("qwen3_8b_first_release", ["tool_calls"], {"tools": TOOLS}),
    ("qwen3_8b_first_release", ["thinking"], {"enable_thinking": False}),
    ("llava_onevision_qwen2_7b_ov_hf", ["video_text", "system_video_answer", "image_and_video", "plain_strings"], {}),
]
MESSAGES = {
    "video_text": VIDEO_TEXT,
    "system_video_answer": SYSTEM_VIDEO_ANSWER,
    "image_and_video": IMAGE_AND_VIDEO,
    "plain_strings": PLAIN_STRINGS,
    "tool_calls": TOOL_CALLS,
    "tool_calls_no_thinking": TOOL_CALLS[:-1] + [{"role": "assistant", "content": "21도입니다."}],
    "thinking": THINKING,
}


def render(template, context, name=None):
    try:
        return compile_template(template).render(**context)
    except Exception as e:
        if name is not None:  # an expected output must render
            raise SystemExit(f"case {name!r} failed: {type(e).__name__}: {e}") from e
        raise


def main():
    cases, errors = [], []
    for name, template, extra in SMALL:
        context = {**CTX, **extra}
        cases.append({"name": name, "template": template, "context": context, "output": render(template, context, name)})
    for template_name, message_sets, extra in CHAT_RUNS:
        for messages_name in message_sets:
            for add_generation_prompt in (False, True):
                # apply_chat_template passes these; the extra ones are template kwargs
                context = {"messages": MESSAGES[messages_name], "tools": None, "documents": None,
                           "add_generation_prompt": add_generation_prompt, **extra}
                suffix = "".join(f" {k}" for k in extra)
                name = f"{template_name} {messages_name}{suffix}{' generation prompt' if add_generation_prompt else ''}"
                output = render(CHAT_TEMPLATES[template_name], context, name)
                cases.append({"name": name, "chat_template": template_name, "context": context, "output": output})
    for name, template in ERRORS:
        try:
            render(template, CTX)
        except Exception as e:  # noqa: BLE001 - the class name is what is recorded
            errors.append({"name": name, "template": template, "exception": type(e).__name__, "message": str(e)})
        else:
            raise SystemExit(f"error case {name!r} rendered without an error")
    names = [c["name"] for c in cases] + [e["name"] for e in errors]
    assert len(names) == len(set(names)), "case names must be unique"
    fixture = {
        "generator": "tools/reference/jinja_chat_templates.py",
        "backend": BACKEND,
        "versions": {p: importlib.metadata.version(p) for p in ("jinja2", "transformers") if _installed(p)},
        "error_context": CTX,  # every error case renders with this context
        "chat_templates": CHAT_TEMPLATES,
        "cases": cases,
        "errors": errors,
    }
    OUT.write_text(compact_json(fixture), encoding="utf-8")
    print(f"wrote {OUT.relative_to(ROOT)}: {len(cases)} cases, {len(errors)} error cases, {OUT.stat().st_size} bytes")


def compact_json(fixture):
    """One line per case and per chat template: readable diffs at a third of the indented size."""
    def dump(value):
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))

    parts = []
    for key, value in fixture.items():
        if isinstance(value, list):
            body = ",\n".join(dump(item) for item in value)
            parts.append(f"{dump(key)}:[\n{body}\n]")
        elif key == "chat_templates":
            body = ",\n".join(f"{dump(k)}:{dump(v)}" for k, v in value.items())
            parts.append(f"{dump(key)}:{{\n{body}\n}}")
        else:
            parts.append(f"{dump(key)}:{dump(value)}")
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _installed(package):
    try:
        importlib.metadata.version(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


if __name__ == "__main__":
    main()
