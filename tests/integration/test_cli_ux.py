"""The `fluxion` CLI's conveniences: "did you mean" at every level (command,
subcommand, option, --output format, completion shell) with exit code 2;
the bash and zsh completion scripts written from the command tables
(syntax, commands, subcommands, options, option values, names asked of the
server); and --output: -o json is one JSON document with the answer's
fields, -o table (the default) has headers, -o name lists names."""
import json
import os
import re
import shutil
import subprocess
import sys
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fxtest  # noqa: E402

CLI = os.environ.get("FLUXION_CLI") or os.path.join(fxtest.SOURCE_DIR, "build", "fluxion")
if not os.access(CLI, os.X_OK):
    print("skipped: no fluxion CLI at %s (set FLUXION_CLI)" % CLI)
    sys.exit(fxtest.SKIP)
MODELS = os.path.join(fxtest.SOURCE_DIR, "examples", "models")
BASH = shutil.which("bash")


def run(args, env=None, expect=0, test=None, stdin=None):
    e = dict(os.environ)
    e.pop("FLUXION_SERVER", None)
    e.update(env or {})
    p = subprocess.run([CLI] + list(args), capture_output=True, text=True, env=e, timeout=60,
                       input=stdin)
    if test is not None:
        test.assertEqual(p.returncode, expect, "fluxion %s: rc %d\nstdout: %s\nstderr: %s"
                         % (" ".join(args), p.returncode, p.stdout, p.stderr))
    return p


def complete(script, words, env=None, shell="bash"):
    """The completions bash's _fluxion offers for words (the last one being
    completed), with the CLI's directory first on PATH, as `fluxion`."""
    e = dict(os.environ, PATH=os.path.dirname(os.path.abspath(CLI)) + ":" + os.environ["PATH"])
    e.pop("FLUXION_SERVER", None)
    e.update(env or {})
    prog = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 )); _fluxion; '
            'printf "%s\\n" "${COMPREPLY[@]}"')
    p = subprocess.run([BASH, "-c", prog, "_", script] + list(words), capture_output=True,
                       text=True, env=e, timeout=60)
    assert p.returncode == 0, p.stderr
    return [w for w in p.stdout.split("\n") if w]


class DidYouMean(unittest.TestCase):
    def usage(self, *args):
        p = run(args, expect=2, test=self)
        self.assertEqual(p.stdout, "")
        return p.stderr

    def test_each_level(self):
        self.assertIn("fluxion: unknown command 'modle'; did you mean 'model'?", self.usage("modle"))
        self.assertIn("fluxion: model: unknown subcommand 'lsit'; did you mean 'list'?",
                      self.usage("model", "lsit"))
        self.assertIn("fluxion: model list: unknown option '--jsno'; did you mean '--json'?",
                      self.usage("model", "list", "--jsno"))
        # a command's own option
        self.assertIn("model export: unknown option '--verson'; did you mean '--version'?",
                      self.usage("model", "export", "m", "--verson", "2", "-o", "f"))
        self.assertIn("dataset upload: unknown option '--descripton'; did you mean "
                      "'--description'?", self.usage("dataset", "upload", "d", "f",
                                                     "--descripton", "x"))
        # a global option, before the command and after it
        self.assertIn("fluxion: unknown option '--sever'; did you mean '--server'?",
                      self.usage("--sever", "h:1", "status"))
        self.assertIn("status: unknown option '--tiemout'; did you mean '--timeout'?",
                      self.usage("status", "--tiemout", "3"))
        # --name=value is matched by its name
        self.assertIn("unknown option '--contxt=x'; did you mean '--context'?",
                      self.usage("--contxt=x", "status"))
        self.assertIn("unknown format 'jsn'; did you mean 'json'?", self.usage("-o", "jsn", "status"))
        self.assertIn("unknown format 'yaml' (see", self.usage("status", "--output", "yaml"))
        self.assertIn("completion: unknown shell 'bahs'; did you mean 'bash'?",
                      self.usage("completion", "bahs"))
        self.assertIn("did you mean 'bash' or 'zsh'?", self.usage("completion", "bsh"))
        # case and a prefix
        self.assertIn("did you mean 'model'?", self.usage("Model"))
        self.assertIn("did you mean 'whoami'?", self.usage("who"))

    def test_ties_and_nothing_close(self):
        self.assertIn("unknown command 't'; did you mean 'train', 'team' or 'token'?",
                      self.usage("t"))
        err = self.usage("frobnicate")
        self.assertIn("unknown command 'frobnicate' (see fluxion --help)", err)
        self.assertNotIn("did you mean", err)
        err = self.usage("model", "list", "-x")
        self.assertIn("unknown option '-x'", err)
        self.assertNotIn("did you mean", err)

    def test_help_lists_output(self):
        out = run(["--help"], test=self).stdout
        self.assertIn("-o, --output FORMAT", out)
        self.assertIn("completion", out)


@unittest.skipUnless(BASH, "no bash")
class Completion(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = os.path.join(fxtest._WORK, "completion")
        os.makedirs(cls.dir, exist_ok=True)
        cls.bash = os.path.join(cls.dir, "fluxion.bash")
        with open(cls.bash, "w") as f:
            f.write(run(["completion", "bash"]).stdout)

    def test_bash_syntax(self):
        p = subprocess.run([BASH, "-n", self.bash], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(self.bash) as f:
            text = f.read()
        self.assertIn("complete -F _fluxion fluxion", text)

    def test_commands_match_help(self):
        """Every command `fluxion --help` lists completes (the script and the
        help come from the same tables)."""
        helptext = run(["--help"], test=self).stdout
        listed = set(m.group(1) for m in re.finditer(r"^  ([a-z][a-z-]*)", helptext, re.M))
        self.assertIn("completion", listed)
        tops = set(complete(self.bash, ["fluxion", ""]))
        self.assertEqual(tops, listed)
        for group in ("model", "dataset", "job", "team", "token", "cert", "config"):
            subs = set(complete(self.bash, ["fluxion", group, ""]))
            want = set(m.group(1) for m in re.finditer(r"^  %s ([a-z-]+)" % group, helptext,
                                                       re.M))
            self.assertEqual(subs, want, group)

    def test_words(self):
        self.assertEqual(complete(self.bash, ["fluxion", "mo"]), ["model"])
        self.assertEqual(complete(self.bash, ["fluxion", "model", "li"]), ["list"])
        self.assertEqual(sorted(complete(self.bash, ["fluxion", "model", "l"])), ["list", "load"])
        # after global options and their values (a HOST:PORT bash splits)
        self.assertEqual(complete(self.bash, ["fluxion", "--server", "h", ":", "7", "-o", "json",
                                              "mo"]), ["model"])
        self.assertEqual(complete(self.bash, ["fluxion", "--timeout", "3", "job", "w"]),
                         ["watch"])
        self.assertEqual(complete(self.bash, ["fluxion", "nosuch", ""]), [])

    def test_options(self):
        opts = complete(self.bash, ["fluxion", "model", "create", "--"])
        for o in ("--name", "--weights", "--server", "--output", "--json", "--help"):
            self.assertIn(o, opts)
        self.assertEqual(complete(self.bash, ["fluxion", "model", "config", "x", "--max-b"]),
                         ["--max-batch-size"])
        self.assertEqual(complete(self.bash, ["fluxion", "--tls-c"]), ["--tls-ca", "--tls-cert"])

    def test_option_values(self):
        self.assertEqual(complete(self.bash, ["fluxion", "-o", ""]), ["table", "json", "name"])
        self.assertEqual(complete(self.bash, ["fluxion", "model", "list", "--output", "j"]),
                         ["json"])
        # --output=j, which bash splits at the =
        self.assertEqual(complete(self.bash, ["fluxion", "--output", "=", "j"]), ["json"])
        self.assertEqual(complete(self.bash, ["fluxion", "--output", "=", "json", "mod"]),
                         ["model"])
        # `model export -o FILE`: its own -o is a file
        open(os.path.join(self.dir, "weights.safetensors"), "w").close()
        prefix = os.path.join(self.dir, "weig")
        self.assertEqual(complete(self.bash, ["fluxion", "model", "export", "m", "-o", prefix]),
                         [os.path.join(self.dir, "weights.safetensors")])
        self.assertEqual(complete(self.bash, ["fluxion", "--token-file", prefix]),
                         [os.path.join(self.dir, "weights.safetensors")])
        # a value that is not a file completes nothing
        self.assertEqual(complete(self.bash, ["fluxion", "model", "create", "f", "--name", ""]),
                         [])

    def test_file_positional(self):
        open(os.path.join(self.dir, "spec.json"), "w").close()
        prefix = os.path.join(self.dir, "spe")
        self.assertEqual(complete(self.bash, ["fluxion", "model", "create", prefix]),
                         [os.path.join(self.dir, "spec.json")])
        self.assertEqual(complete(self.bash, ["fluxion", "model", "import", "m", prefix]),
                         [os.path.join(self.dir, "spec.json")])

    def test_zsh(self):
        zsh = shutil.which("zsh")
        if not zsh:
            self.skipTest("no zsh (scripts/setup.sh installs it)")
        path = os.path.join(self.dir, "_fluxion")
        with open(path, "w") as f:
            f.write(run(["completion", "zsh"], test=self).stdout)
        p = subprocess.run([zsh, "-n", path], capture_output=True, text=True)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(path) as f:
            self.assertTrue(f.readline().startswith("#compdef fluxion"))

        # zsh's completion builtins stubbed to print what they are given
        # (the candidates before zsh filters them by the typed prefix)
        def zcomplete(*words):
            prog = ('source "$1"; shift; '
                    '_describe() { print -l -- ${${(P)4}%%:*}; }; '
                    'compadd() { [[ $1 == -- ]] && shift; print -l -- "$@"; }; '
                    '_files() { print FILES; }; '
                    'words=("$@"); CURRENT=$#; _fluxion')
            p = subprocess.run([zsh, "-c", prog, "_", path] + list(words), capture_output=True,
                               text=True, timeout=60)
            self.assertEqual(p.returncode, 0, p.stderr)
            return [w for w in p.stdout.split("\n") if w]
        self.assertIn("model", zcomplete("fluxion", ""))
        self.assertIn("completion", zcomplete("fluxion", "--timeout", "3", ""))
        self.assertEqual(set(zcomplete("fluxion", "model", "")),
                         set(complete(self.bash, ["fluxion", "model", ""])))
        self.assertIn("--weights", zcomplete("fluxion", "model", "create", "--"))
        self.assertEqual(zcomplete("fluxion", "-o", ""), ["table", "json", "name"])
        self.assertEqual(zcomplete("fluxion", "model", "export", "m", "-o", ""), ["FILES"])
        self.assertEqual(zcomplete("fluxion", "model", "create", ""), ["FILES"])
        self.assertEqual(zcomplete("fluxion", "model", "create", "f", "--name", ""), [])


class Output(fxtest.DaemonTest):
    def cli(self, *args, expect=0):
        return run(args, env={"FLUXION_SERVER": self.d.address}, expect=expect, test=self)

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        for name in ("ux-b", "ux-a"):
            run(["model", "create", os.path.join(MODELS, "mlp.json"), "--name", name],
                env={"FLUXION_SERVER": cls.d.address})

    def test_model_list(self):
        for args in (["-o", "json", "model", "list"], ["model", "list", "--output=json"],
                     ["model", "list", "--json"]):
            out = self.cli(*args).stdout
            self.assertEqual(out.count("\n"), 1, out)  # one document, one line
            doc = json.loads(out)
            self.assertEqual([m["name"] for m in doc["models"]], ["ux-a", "ux-b"])
            for key in ("latest_version", "loaded", "created_unix_ms", "num_parameters"):
                self.assertIn(key, doc["models"][0])
        for args in (["model", "list"], ["-o", "table", "model", "list"]):
            lines = self.cli(*args).stdout.splitlines()
            self.assertEqual(lines[0].split(), ["NAME", "LATEST", "LOADED", "CREATED",
                                                "DESCRIPTION"])
            self.assertEqual([l.split()[0] for l in lines[1:]], ["ux-a", "ux-b"])
            # aligned: every row's second column starts where the header's does
            col = lines[0].index("LATEST")
            self.assertTrue(all(l[col - 2:col] == "  " for l in lines[1:]), lines)
        self.assertEqual(self.cli("model", "list", "-o", "name").stdout, "ux-a\nux-b\n")
        # the last of --json and -o wins
        self.assertEqual(self.cli("--json", "model", "list", "-o", "name").stdout,
                         "ux-a\nux-b\n")

    def test_show(self):
        doc = json.loads(self.cli("model", "get", "ux-a", "-o", "json").stdout)
        self.assertEqual(doc["name"], "ux-a")
        self.assertIn("spec", doc)
        self.assertIn("name:", self.cli("model", "get", "ux-a").stdout)
        self.assertEqual(self.cli("model", "get", "ux-a", "-o", "name").stdout, "ux-a\n")
        doc = json.loads(self.cli("-o", "json", "status").stdout)
        self.assertIsInstance(doc, dict)

    def test_other_lists(self):
        for cmd, key in ((["dataset", "list"], "datasets"), (["job", "list"], "jobs")):
            doc = json.loads(self.cli("-o", "json", *cmd).stdout)
            self.assertEqual(doc.get(key, []), [])
            self.assertEqual(self.cli("-o", "name", *cmd).stdout, "")
        json.loads(self.cli("-o", "json", "queue").stdout)
        # an empty list's table still has its header, without trailing blanks
        self.assertEqual(self.cli("job", "list").stdout,
                         "ID  STATE  MODEL  DATASET  STEP  LOSS  RESULT  QUEUE\n")

    def test_name_without_names(self):
        for cmd in (["status"], ["predict", "ux-a"], ["job", "watch", "j"]):
            err = self.cli("-o", "name", *cmd, expect=2).stderr
            self.assertIn("-o name", err)
            self.assertIn("-o json", err)
        # an answer without names after the call
        err = self.cli("whoami", "-o", "name", expect=2).stderr
        self.assertIn("has no names", err)

    def test_own_output_option_wins(self):
        path = os.path.join(fxtest._WORK, "ux-a.safetensors")
        out = self.cli("model", "export", "ux-a", "-o", path).stdout
        self.assertIn("exported model ux-a", out)
        self.assertTrue(os.path.getsize(path) > 0)

    def test_unloaded_hint(self):
        spec = os.path.join(fxtest._WORK, "noload.json")
        with open(os.path.join(MODELS, "mlp.json")) as f:
            doc = json.load(f)
        doc["no_load"] = True
        with open(spec, "w") as f:
            json.dump(doc, f)
        self.cli("model", "create", spec, "--name", "ux-u")
        p = run(["predict", "ux-u", "--input", "-"], env={"FLUXION_SERVER": self.d.address},
                stdin='{"x": [[1, 2, 3, 4]]}', expect=1, test=self)
        self.assertIn("hint: load it with `fluxion model load ux-u`", p.stderr)

    @unittest.skipUnless(BASH, "no bash")
    def test_completes_names(self):
        script = os.path.join(fxtest._WORK, "fluxion-names.bash")
        with open(script, "w") as f:
            f.write(run(["completion", "bash"]).stdout)
        env = {"FLUXION_SERVER": self.d.address}
        self.assertEqual(complete(script, ["fluxion", "model", "get", "ux-"], env=env),
                         ["ux-a", "ux-b"])
        self.assertEqual(complete(script, ["fluxion", "predict", "ux-b"], env=env), ["ux-b"])
        # the server named on the command line (split at the colon, as bash does)
        host, port = self.d.address.rsplit(":", 1)
        self.assertEqual(complete(script, ["fluxion", "--server", host, ":", port, "model",
                                           "load", "ux-a"]), ["ux-a"])
        # no server: no names, no noise
        self.assertEqual(complete(script, ["fluxion", "--server", "127.0.0.1", ":", "1",
                                           "--timeout", "1", "model", "get", ""]), [])


if __name__ == "__main__":
    fxtest.main()
