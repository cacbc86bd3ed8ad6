"""The web apps: the analyst console and API (`web.console`), and the public delist portal (`web.portal`).

Two apps, two processes, two attack surfaces. Every string they show comes from attacker-written mail:
Jinja2 autoescapes everything, pages carry no script at all, and a strict Content-Security-Policy says so.
"""
