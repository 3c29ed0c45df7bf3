"""The three dashboards' panels: what each shows, its PromQL and its description in a user's words.

Recording rules used here (``root:...``, ``env:...``, ``owner:...``) are defined in
``deploy/prometheus/rules/recording.yml``; load those rules into the Prometheus the dashboards read.
"""

from __future__ import annotations

from grafana.model import JSON, Dashboard, Panel, Row, Target, datasource_variable, query_variable

HOST = 'job=~"$job", instance=~"$instance"'
ROOT = HOST + ', root=~"$root"'
ENV = ROOT + ', env=~"$env"'
DAY = 86400
# Ages of an env's last conda transaction: green under 30 days, orange under 90, red beyond.
AGE_STEPS: tuple[tuple[str, float | None], ...] = (("green", None), ("orange", 30 * DAY), ("red", 90 * DAY))
UP_MAPPINGS = ({"type": "value", "options": {"0": {"text": "DOWN", "color": "red"},
                                             "1": {"text": "UP", "color": "green"}}},)
OK_MAPPINGS = ({"type": "value", "options": {"0": {"text": "failed", "color": "red"},
                                             "1": {"text": "ok", "color": "green"}}},)
ENV_DETAIL_LINK = ({"title": "Open this env's detail",
                    "url": "/d/conda-env-detail?${datasource:queryparam}&var-job=${__field.labels.job}"
                           "&var-instance=${__field.labels.instance}&var-root=${__field.labels.root}"
                           "&var-env=${__field.labels.env}&${__url_time_range}"},)


def _host_variables() -> list[JSON]:
    return [
        datasource_variable(),
        query_variable("job", "Job", "label_values(conda_exporter_build_info, job)"),
        query_variable("instance", "Instance", 'label_values(conda_exporter_build_info{job=~"$job"}, instance)'),
    ]


def _root_variable() -> JSON:
    return query_variable("root", "Conda root", f"label_values(conda_root_bytes{{{HOST}}}, root)")


def overview() -> Dashboard:
    variables = [
        *_host_variables(),
        _root_variable(),
        query_variable("env", "Environment", f"label_values(conda_env_unique_bytes{{{ROOT}}}, env)"),
        query_variable("owner", "Owner", f"label_values(conda_env_info{{{ROOT}}}, owner)"),
    ]
    p = Panel
    items: list[Panel | Row] = [
        Row("Where the disk goes"),
        p("stat", "True disk cost", "What the selected conda installations really occupy on disk, every "
          "hardlinked file counted once: the number `du -s` gives.",
          (Target(f"sum(conda_root_bytes{{{ROOT}}})", "true cost", instant=True),), w=5, h=5),
        p("stat", "Cost without hardlinks", "What the same files would occupy if conda had copied every package "
          "file into every env instead of hardlinking it from the package cache.",
          (Target(f"sum(conda_root_apparent_bytes{{{ROOT}}})", "without hardlinks", instant=True),), w=5, h=5),
        p("stat", "Saved by hardlinks", "Disk space that hardlinks save: the cost without hardlinks minus the "
          "true cost.",
          (Target(f"sum(root:conda_hardlink_savings_bytes:apparent_minus_allocated{{{ROOT}}})", "saved",
                  instant=True),), w=5, h=5),
        p("stat", "Reclaimable with conda clean", "Bytes `conda clean --packages --tarballs` would free: "
          "extracted packages no env uses any more and downloaded package archives.",
          (Target(f"sum(root:conda_pkgs_reclaimable_bytes:sum{{{ROOT}}})", "reclaimable", instant=True),),
          w=5, h=5, thresholds=(("green", None), ("orange", 10 * 1024**3))),
        p("stat", "Environments", "Number of conda environments found, the base env of each root included.",
          (Target(f"sum(conda_root_envs{{{ROOT}}})", "envs", instant=True),), unit="short", w=4, h=5),
        p("timeseries", "True cost vs cost without hardlinks, per root", "Per conda installation: its true disk "
          "cost (solid) and what it would cost if nothing were hardlinked. The gap is what hardlinks save.",
          (Target(f"conda_root_bytes{{{ROOT}}}", "{{root}} true cost"),
           Target(f"conda_root_apparent_bytes{{{ROOT}}}", "{{root}} without hardlinks")), w=12),
        p("timeseries", "Free space on the filesystems holding the roots", "Free space left for users on the "
          "filesystem of each root, as the exporter saw it at its last scan, and as node_exporter sees it "
          "(when node_exporter runs on the host).",
          (Target(f"conda_root_filesystem_avail_bytes{{{ROOT}}}", "{{root}} (exporter)"),
           Target("node_filesystem_avail_bytes and on (instance, job, device, mountpoint) "
                  "node_filesystem:conda_root_holding:info", "{{instance}} {{mountpoint}} (node_exporter)")),
          w=12),
        Row("Environments"),
        p("bargauge", "Top envs by unique bytes", "The environments whose deletion would free the most space: "
          "bytes of files that no other env and no package cache shares. Click a bar for the env's detail.",
          (Target(f"topk(10, conda_env_unique_bytes{{{ENV}}})", "{{root}} {{env}}", instant=True),),
          w=8, h=10, links=ENV_DETAIL_LINK),
        p("timeseries", "Unique and shared bytes per env", "Each env's files, split in unique bytes (freed by "
          "deleting the env) and shared bytes (hardlinked with the package cache or other envs, still used "
          "elsewhere after deleting it).",
          (Target(f"conda_env_unique_bytes{{{ENV}}}", "{{env}} unique"),
           Target(f"conda_env_shared_bytes{{{ENV}}}", "{{env}} shared")), w=16, h=10, stack=True),
        p("timeseries", "Untracked and copied bytes per env", "Untracked: files in the env that no conda "
          "package installed (pip packages, caches, data). Copied: package files conda copied instead of "
          "hardlinking, so they cost disk twice.",
          (Target(f"conda_env_untracked_bytes{{{ENV}}}", "{{env}} untracked"),
           Target(f"conda_env_copied_bytes{{{ENV}}}", "{{env}} copied")), w=12),
        p("bargauge", "Time since the last conda transaction, per env", "How long ago conda last installed, "
          "updated or removed something in each env. Old and large envs are candidates for removal.",
          (Target(f"sort_desc(time() - conda_env_last_transaction_timestamp_seconds{{{ENV}}})",
                  "{{root}} {{env}}", instant=True),), unit="s", w=12, thresholds=AGE_STEPS),
        Row("What can be freed"),
        p("bargauge", "Top envs by what deleting them frees", "What deleting each env and then running `conda "
          "clean --packages` would free, beyond what that clean frees anyway: the env's own files plus the "
          "package cache dirs no other env links. At least the env's unique bytes. Click a bar for the detail.",
          (Target(f"topk(10, conda_env_reclaimable_bytes{{{ENV}}})", "{{root}} {{env}}", instant=True),),
          w=8, h=10, links=ENV_DETAIL_LINK),
        p("bargauge", "What each owner's envs would free", "Deleting all envs of one owner together and then "
          "cleaning the package cache: the capacity a user leaving gives back. More than the sum of their "
          "envs' own figures when their envs share packages only with each other.",
          (Target(f'conda_owner_reclaimable_bytes{{{ROOT}, owner=~"$owner"}}', "{{owner}} ({{root}})",
                  instant=True),), w=8, h=10),
        p("stat", "Stale envs", "Envs whose last conda transaction is older than the exporter's --stale.after "
          "(90 days by default). Envs without a conda-meta/history file never count.",
          (Target(f"sum(conda_root_stale_envs{{{ROOT}}})", "stale envs", instant=True),), unit="short", w=4,
          h=10),
        p("stat", "Freed by deleting the stale envs", "What deleting every stale env and then running `conda "
          "clean --packages` would free.",
          (Target(f"sum(conda_root_stale_reclaimable_bytes{{{ROOT}}})", "freed", instant=True),), w=4, h=10,
          thresholds=(("green", None), ("orange", 20 * 1024**3))),
        Row("Growth"),
        p("bargauge", "Growth per root over 1 day and 7 days", "How much each conda installation's true disk "
          "cost changed over the last day and the last week (less if Prometheus has watched it for less).",
          (Target(f"root:conda_root_bytes:delta1d{{{ROOT}}}", "{{root}} 1 day", instant=True),
           Target(f"root:conda_root_bytes:delta7d{{{ROOT}}}", "{{root}} 7 days", instant=True)),
          w=8, thresholds=(("green", None), ("orange", 5 * 1024**3), ("red", 50 * 1024**3))),
        p("bargauge", "Envs that grew most over 1 day", "The environments whose files (unique + shared bytes) "
          "grew the most over the last day.",
          (Target(f"topk(10, env:conda_env_bytes:delta1d{{{ENV}}})", "{{root}} {{env}}", instant=True),),
          w=8, links=ENV_DETAIL_LINK, thresholds=(("green", None), ("orange", 1024**3), ("red", 5 * 1024**3))),
        p("timeseries", "True cost per root over time", "Each installation's true disk cost over the chosen time "
          "range: a steady climb is growth to plan for.",
          (Target(f"conda_root_bytes{{{ROOT}}}", "{{root}}"),), w=8),
        Row("Package caches and owners"),
        p("timeseries", "Package cache size and reclaimable parts", "Each package cache: its size on disk, the "
          "extracted packages no env uses (`conda clean --packages`), the downloaded archives "
          "(`conda clean --tarballs`), and the env files copied from it that re-linking would save.",
          (Target(f"conda_pkgs_bytes{{{ROOT}}}", "{{pkgs_dir}} size"),
           Target(f"conda_pkgs_unreferenced_bytes{{{ROOT}}}", "{{pkgs_dir}} unused packages"),
           Target(f"conda_pkgs_tarball_bytes{{{ROOT}}}", "{{pkgs_dir}} archives"),
           Target(f"conda_pkgs_dedupable_bytes{{{ROOT}}}", "{{pkgs_dir}} re-linkable copies")), w=12),
        p("bargauge", "Unique bytes per owner", "Disk space that deleting all of a user's envs would free, per "
          "owner of the env directories.",
          (Target(f'owner:conda_env_unique_bytes:sum{{{ROOT}, owner=~"$owner"}}', "{{owner}} ({{root}})",
                  instant=True),), w=12),
    ]
    return Dashboard("conda-overview", "Conda disk overview",
                     "True, hardlink-aware disk usage of conda installations, their envs and package caches.",
                     variables, items)


def env_detail() -> Dashboard:
    variables = [
        *_host_variables(),
        _root_variable(),
        query_variable("env", "Environment", f"label_values(conda_env_unique_bytes{{{ROOT}}}, env)", multi=False),
    ]
    p = Panel
    items: list[Panel | Row] = [
        p("stat", "Freed by deleting it", "Unique bytes: files of this env that nothing else links to. Deleting "
          "the env gives this much back.",
          (Target(f"conda_env_unique_bytes{{{ENV}}}", "{{env}}", instant=True),), w=4, h=5),
        p("stat", "Freed by deleting it and cleaning", "What deleting this env and then running `conda clean "
          "--packages` would free: its unique bytes plus the package cache dirs that only it still links.",
          (Target(f"conda_env_reclaimable_bytes{{{ENV}}}", "{{env}}", instant=True),), w=4, h=5),
        p("stat", "Shared with others", "Shared bytes: files of this env hardlinked with the package cache or "
          "other envs. They stay on disk after deleting the env while something else uses them.",
          (Target(f"conda_env_shared_bytes{{{ENV}}}", "{{env}}", instant=True),), w=3, h=5),
        p("stat", "Apparent size", "The sum of the sizes of every file in the env, as `du --apparent-size` "
          "shows: hardlinks make the real cost smaller.",
          (Target(f"conda_env_apparent_bytes{{{ENV}}}", "{{env}}", instant=True),), w=3, h=5),
        p("stat", "Share of the root's true cost", "Unique bytes of this env divided by the true disk cost of "
          "its conda installation.",
          (Target(f"conda_env_unique_bytes{{{ENV}}} / on (instance, job, root) group_left () "
                  f"conda_root_bytes{{{ROOT}}}", "{{env}}", instant=True),),
          unit="percentunit", w=3, h=5, decimals=1),
        p("stat", "Last scanned", "When the exporter last measured this env.",
          (Target(f"conda_env_last_scan_timestamp_seconds{{{ENV}}} * 1000", "{{env}}", instant=True),),
          unit="dateTimeFromNow", w=3, h=5),
        p("stat", "Last conda transaction", "When conda last installed, updated or removed a package here "
          "(from the env's conda-meta/history).",
          (Target(f"conda_env_last_transaction_timestamp_seconds{{{ENV}}} * 1000", "{{env}}", instant=True),),
          unit="dateTimeFromNow", w=4, h=5),
        p("timeseries", "Size over time", "The env's unique, shared and apparent bytes over time, with the "
          "bytes no package installed (untracked) and the package files copied instead of linked.",
          (Target(f"conda_env_unique_bytes{{{ENV}}}", "unique"),
           Target(f"conda_env_shared_bytes{{{ENV}}}", "shared"),
           Target(f"conda_env_apparent_bytes{{{ENV}}}", "apparent"),
           Target(f"conda_env_untracked_bytes{{{ENV}}}", "untracked"),
           Target(f"conda_env_copied_bytes{{{ENV}}}", "copied")), w=16, h=9),
        p("timeseries", "Growth over 1 day", "How much the env's files (unique + shared bytes) changed over "
          "the previous 24 hours, at each point in time.",
          (Target(f"env:conda_env_bytes:delta1d{{{ENV}}}", "{{env}}"),), w=8, h=9),
        p("timeseries", "Files and hardlinks", "Number of files (and symlinks) in the env, how many of them are "
          "hardlinks, and how many conda packages are installed.",
          (Target(f"conda_env_files{{{ENV}}}", "files"),
           Target(f"conda_env_hardlinked_files{{{ENV}}}", "hardlinked files"),
           Target(f"conda_env_packages{{{ENV}}}", "packages")), unit="short", w=12),
        p("stat", "Unreadable paths at the last scan", "Paths the exporter could not read in its last scan of "
          "this env (permissions, files vanishing mid-scan). Above zero, the numbers above are partial.",
          (Target(f"conda_env_scan_errors{{{ENV}}}", "{{env}}", instant=True),), unit="short", w=4,
          thresholds=(("green", None), ("red", 1))),
        p("table", "Owner and Python", "Who owns the env's directory and which Python it runs.",
          (Target(f"conda_env_info{{{ENV}}}", instant=True),), unit="short", w=8),
    ]
    return Dashboard("conda-env-detail", "Conda environment detail",
                     "One conda environment over time: sizes, hardlinks, files and its share of the root.",
                     variables, items)


def exporter_health() -> Dashboard:
    p = Panel
    items: list[Panel | Row] = [
        p("stat", "Scrape status", "Whether Prometheus reaches each exporter.",
          (Target(f"up{{{HOST}}}", "{{instance}}", instant=True),), unit="none", w=6, h=5,
          mappings=UP_MAPPINGS, thresholds=(("red", None), ("green", 1))),
        p("stat", "Last scan", "Whether the exporter's last scan completed. After a failed scan it keeps "
          "serving the numbers of the last good one.",
          (Target(f"conda_exporter_last_scan_success{{{HOST}}}", "{{instance}}", instant=True),), unit="none",
          w=6, h=5, mappings=OK_MAPPINGS, thresholds=(("red", None), ("green", 1))),
        p("stat", "Age of the last successful scan", "Time since a scan last completed. The full rescan runs "
          "every --scan.interval (6 hours by default); far beyond that, the numbers are stale.",
          (Target(f"time() - conda_exporter_last_scan_success_timestamp_seconds{{{HOST}}}", "{{instance}}",
                  instant=True),), unit="s", w=6, h=5,
          thresholds=(("green", None), ("orange", 7 * 3600), ("red", 13 * 3600))),
        p("stat", "Exporter version", "Version of conda-env-exporter running on each instance.",
          (Target(f"conda_exporter_build_info{{{HOST}}}", "{{instance}}: {{version}}", instant=True),),
          unit="none", w=6, h=5),
        p("timeseries", "Duration of the last full scan", "Wall time the exporter's last full scan of all "
          "roots took.",
          (Target(f"conda_exporter_last_scan_duration_seconds{{{HOST}}}", "{{instance}}"),), unit="s", w=12),
        p("timeseries", "Scan duration by trigger (90th percentile)", "How long scans take, by what started "
          "them: startup, a change seen by the watcher, a poll, the periodic reconcile.",
          (Target("histogram_quantile(0.9, sum by (instance, trigger, le) "
                  f"(rate(conda_exporter_scan_duration_seconds_bucket{{{HOST}}}[$__rate_interval])))",
                  "{{instance}} {{trigger}}"),), unit="s", w=12),
        p("timeseries", "Scans per hour by trigger and result", "Scans run, as a rate per hour, by what started "
          "them and whether they succeeded.",
          (Target("sum by (instance, trigger, result) "
                  f"(rate(conda_exporter_scans_total{{{HOST}}}[$__rate_interval])) * 3600",
                  "{{instance}} {{trigger}} {{result}}"),), unit="short", w=12),
        p("timeseries", "Unreadable paths per hour, by kind", "Paths scans could not read, as a rate per hour: "
          "permission denied, vanished during the scan, I/O errors, unreadable conda metadata.",
          (Target("sum by (instance, kind) "
                  f"(rate(conda_exporter_scan_errors_total{{{HOST}}}[$__rate_interval])) * 3600",
                  "{{instance}} {{kind}}"),), unit="short", w=12),
        p("stat", "Watch mode", "How the exporter notices changes: inotify (immediate) or polling (slower; "
          "the fallback when inotify is unavailable or exhausted).",
          (Target(f"conda_exporter_watch_mode{{{HOST}}}", "{{instance}}: {{mode}}", instant=True),),
          unit="none", w=6, h=6),
        p("timeseries", "inotify watches", "Directories the exporter watches, and whether it hit the kernel's "
          "limit on watches (1 = limit reached).",
          (Target(f"conda_exporter_watches{{{HOST}}}", "{{instance}} watches"),
           Target(f"conda_exporter_watch_limit_reached{{{HOST}}}", "{{instance}} limit reached")),
          unit="short", w=9, h=6),
        p("timeseries", "Filesystem events and queue overflows", "Change events the watcher receives per second, "
          "and kernel queue overflows as a rate per hour (each forces a rescan).",
          (Target(f"rate(conda_exporter_events_total{{{HOST}}}[$__rate_interval])", "{{instance}} events/s"),
           Target(f"rate(conda_exporter_queue_overflows_total{{{HOST}}}[$__rate_interval]) * 3600",
                  "{{instance}} overflows/h")), unit="short", w=9, h=6),
        p("stat", "Oldest result", "Age of the oldest numbers served: how long since the least recently "
          "verified env was last measured (time() minus the exporter's timestamp of it; no value while the "
          "exporter serves no env).",
          (Target(f"time() - conda_exporter_oldest_result_timestamp_seconds{{{HOST}}}", "{{instance}}",
                  instant=True),),
          unit="s", w=6, h=5, thresholds=(("green", None), ("orange", 7 * 3600), ("red", 13 * 3600))),
        p("stat", "Results verified", "1 once the numbers restored from the state file were checked against "
          "the disk; 0 while they are still unverified.",
          (Target(f"conda_exporter_results_verified{{{HOST}}}", "{{instance}}", instant=True),), unit="none",
          w=6, h=5, thresholds=(("orange", None), ("green", 1))),
        p("stat", "State file at startup", "Whether the exporter restored its previous results from the state "
          "file when it started.",
          (Target(f"conda_exporter_state_loaded{{{HOST}}}", "{{instance}}: {{result}}", instant=True),),
          unit="none", w=6, h=5),
        p("stat", "Non-env directories in envs/", "Directories in a root's envs/ that are not environments "
          "(no conda-meta/) and are not counted as envs.",
          (Target(f"conda_root_ignored_dirs{{{HOST}}}", "{{root}}", instant=True),), unit="short", w=6, h=5),
        p("timeseries", "Scrape duration", "How long Prometheus takes to scrape each exporter. Scrapes serve "
          "the last scan's results, so this stays small however large the roots are.",
          (Target(f"scrape_duration_seconds{{{HOST}}}", "{{instance}}"),), unit="s", w=24, h=7),
    ]
    return Dashboard("conda-exporter-health", "Conda exporter health",
                     "Is conda-env-exporter scanning, watching and being scraped as it should?",
                     _host_variables(), items, time_from="now-24h")


def dashboards() -> list[Dashboard]:
    return [overview(), env_detail(), exporter_health()]
