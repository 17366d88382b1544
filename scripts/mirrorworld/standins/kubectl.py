"""The kubectl stand-in: `version --client`, `apply -f`, `get nodes` (and pods, services and
applied kinds), `exec` into the model's pods (_podexec.py), `delete node`, `cordon`,
`uncordon` and `drain`."""

import json
import os
import sys

import _calico
import _pki
import _podexec
import _podnet
import _yaml
from _clusterview import calico_results, cluster_config, node_status, services, synthetic_pods
from _common import (
    MINOR,
    VERSION,
    StandinError,
    arg_path,
    go_version_struct,
    now,
    parse_rfc3339,
    request,
    rooted,
    version_info,
)


def split_globals(argv):
    """Pull --kubeconfig/--server out of argv wherever they are, as kubectl allows."""
    opts, rest, i = {}, [], 0
    while i < len(argv):
        arg = argv[i]
        for flag, key in (("--kubeconfig", "kubeconfig"), ("--server", "server"), ("-s", "server")):
            if arg == flag and i + 1 < len(argv):
                opts[key] = argv[i + 1]
                i += 1
                break
            if arg.startswith(flag + "="):
                opts[key] = arg.split("=", 1)[1]
                break
        else:
            rest.append(arg)
        i += 1
    return opts, rest


class Client:
    def __init__(self, opts):
        path = opts.get("kubeconfig") or os.environ.get("KUBECONFIG")
        path = arg_path(path) if path else rooted(os.path.expanduser("~/.kube/config"))
        self.kc = _pki.read_kubeconfig(path)
        if opts.get("server"):
            self.kc["server"] = opts["server"]

    def call(self, method, path, body=None):
        client = (self.kc["cert"], self.kc["key"]) if self.kc["cert"] else None
        try:
            # kubectl's --request-timeout is 0 (none): the apiserver's answer is awaited, and
            # one without etcd takes etcd's request timeout (7 s) to come
            resp = request(self.kc["server"], method, path, body, ca_pem=self.kc["ca"],
                           client=client, bearer=self.kc.get("token"), timeout_s=60)
        except OSError as exc:
            host = self.kc["server"].split("://", 1)[-1]
            raise StandinError("The connection to the server %s was refused - did you specify "
                               "the right host or port? (%s)" % (host, exc))
        if resp.status >= 300:
            # kubectl/pkg/cmd/util/helpers.go StandardErrorMessage: the Status's reason in
            # brackets, none when it is empty (StatusReasonUnknown, e.g. an etcd error)
            reason = resp.json().get("reason", resp.status) if resp.body else resp.status
            raise StandinError("Error from server%s: %s" % (
                " (%s)" % reason if reason else "", resp.message()))
        return resp.json()


def cmd_version(args):
    if "--client" not in args and "--client=true" not in args:
        raise StandinError("the stand-in supports `kubectl version --client` only")
    if "-o" in args or "--output=json" in args:
        print(json.dumps({"clientVersion": version_info()}, indent=2))
    elif MINOR <= 23 and "--short" not in args:
        print("Client Version: " + go_version_struct())
    else:
        print("Client Version: " + VERSION)
        if MINOR >= 24:
            print("Kustomize Version: v5.0.4-0.20230601165947-6ce0bf390ce3")


def _kind_name(obj):
    api = obj.get("apiVersion", "")
    group = api.split("/")[0] if "/" in api else ""
    return obj.get("kind", "").lower() + ("." + group if group else "")


def cmd_apply(client, args):
    files = [args[i + 1] for i, a in enumerate(args) if a in ("-f", "--filename")
             and i + 1 < len(args)] + [a.split("=", 1)[1] for a in args
                                       if a.startswith(("-f=", "--filename="))]
    if not files:
        raise StandinError('error: must specify one of -f and -k')
    items, sources = [], []  # each object and the file it came from
    for name in files:
        try:
            text = sys.stdin.read() if name == "-" else open(arg_path(name)).read()
            docs = _yaml.load_all(text)
        except OSError as exc:
            raise StandinError('error: the path "%s" does not exist (%s)' % (name, exc))
        except ValueError as exc:
            raise StandinError("error: error parsing %s: %s" % (name, exc))
        for doc in docs:
            found = (doc.get("items") or []) if doc.get("kind", "").endswith("List") \
                else [doc]
            items.extend(found)
            sources.extend([name] * len(found))
    for obj in items:
        if not obj.get("kind") or not (obj.get("metadata") or {}).get("name"):
            raise StandinError("error: error validating data: kind or metadata.name not set")
    results = client.call("POST", "/kubecrate/v1/apply", {"items": items})["results"]
    errors = []
    for obj, action, name in zip(items, results, sources):
        if isinstance(action, dict):
            # kubectl apply.go applyOneObject: cmdutil.AddSourceToErr("applying patch ... for:",
            # the file, the server's error), shown as helpers.go StandardErrorMessage does
            status = action["error"]
            errors.append('Error from server (%s): error when applying patch to %s/%s for: '
                          '"%s": error when patching "%s": %s' % (
                              status.get("reason"), _kind_name(obj), obj["metadata"]["name"],
                              name, name, status.get("message")))
            continue
        print("%s/%s %s" % (_kind_name(obj), obj["metadata"]["name"], action))
    if errors:  # every object was tried; the errors come last (apply.go Run)
        raise StandinError("\n".join(errors))


def _age(stamp):
    seconds = max(0, int(now() - parse_rfc3339(stamp))) if stamp else 0
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return "%d%s" % (seconds // size, unit)
    return "%ds" % seconds


def _flag_values(args, short, long):
    """(values of -x V / --xx=V / --xx V, the remaining args)."""
    values, rest, i = [], [], 0
    while i < len(args):
        arg = args[i]
        if arg in (short, long) and i + 1 < len(args):
            values.append(args[i + 1])
            i += 1
        elif arg.startswith(long + "=") or (short and arg.startswith(short + "=")):
            values.append(arg.split("=", 1)[1])
        else:
            rest.append(arg)
        i += 1
    return values, rest


def cmd_get(client, args):
    output = next((a.split("=", 1)[1] for a in args if a.startswith("-o=")
                   or a.startswith("--output=")), None)
    if "-o" in args:
        output = args[args.index("-o") + 1]
    namespaces, args = _flag_values(args, "-n", "--namespace")
    selectors, args = _flag_values(args, "-l", "--selector")
    what = [a for a in args if not a.startswith("-") and a != output]
    if not what:
        raise StandinError("You must specify the type of resource to get.")
    kind = what[0].lower()
    if kind in ("node", "nodes", "no"):
        items = client.call("GET", "/api/v1/nodes")["items"]
        objects = client.call("GET", "/kubecrate/v1/objects")["items"]
        node_status(client, items, objects, cluster_config(client))
    elif kind in ("pod", "pods", "po", "service", "services", "svc"):
        config = cluster_config(client)
        if kind.startswith("s"):
            items = services(config)
        else:
            objects = client.call("GET", "/kubecrate/v1/objects")["items"]
            nodes = node_status(client, client.call("GET", "/api/v1/nodes")["items"], objects,
                                config)
            items = synthetic_pods(client, nodes, objects, config)
        items = [p for p in items if not namespaces or p["metadata"]["namespace"] in namespaces]
        for selector in selectors:
            key, _, value = selector.partition("=")
            items = [p for p in items if p["metadata"]["labels"].get(key) == value]
    else:
        objects = client.call("GET", "/kubecrate/v1/objects")["items"]
        items = [o for o in objects if o.get("kind", "").lower() in (kind, kind.rstrip("s"))]
        if namespaces:  # a namespaced object is found only in its namespace
            items = [o for o in items if (o.get("metadata") or {}).get("namespace", "")
                     in namespaces + [""]]
    if len(what) > 1:
        items = [o for o in items if o["metadata"]["name"] in what[1:]]
        if not items:
            raise StandinError('Error from server (NotFound): %s "%s" not found'
                               % (kind, what[1]))
    if output == "json" and len(what) == 2:
        # One named object prints as itself, not as a List (kubectl/pkg/cmd/get/get.go,
        # GetOptions.Run: singleItemImplied), which is what a reader of `.data` relies on.
        print(json.dumps(items[0], indent=2))
    elif output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}, indent=2))
    elif output == "name":
        for obj in items:
            print("%s/%s" % (_kind_name(obj), obj["metadata"]["name"]))
    elif kind in ("node", "nodes", "no"):
        rows = [("NAME", "STATUS", "ROLES", "AGE", "VERSION")]
        for node in items:
            labels = node["metadata"].get("labels") or {}
            roles = ",".join(sorted(k.split("/", 1)[1] for k in labels
                                    if k.startswith("node-role.kubernetes.io/"))) or "<none>"
            status = "Ready" if node["status"]["conditions"][0]["status"] == "True" \
                else "NotReady"
            if (node.get("spec") or {}).get("unschedulable"):
                status += ",SchedulingDisabled"
            rows.append((node["metadata"]["name"], status, roles,
                         _age(node["metadata"].get("creationTimestamp")),
                         node["status"]["nodeInfo"]["kubeletVersion"]))
        widths = [max(len(r[i]) for r in rows) for i in range(5)]
        for row in rows:
            print("   ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    else:
        print("NAME")
        for obj in items:
            print(obj["metadata"]["name"])


def cmd_exec(client, args):
    """`kubectl exec [-n NS] POD [-c CONTAINER] -- COMMAND...` into a pod of the model, with
    the refusals of kubectl (staging/src/k8s.io/kubectl/pkg/cmd/exec/exec.go), the kubelet
    (pkg/kubelet/kubelet_pods.go GetExec: only a running container is found) and the runtime
    (a command the image lacks). The command's own exit code is kubectl's, after "command
    terminated with exit code N" (exec.go, uexec.CodeExitError)."""
    command = args[args.index("--") + 1:] if "--" in args else None
    args = args[:args.index("--")] if "--" in args else args
    namespaces, args = _flag_values(args, "-n", "--namespace")
    containers, args = _flag_values(args, "-c", "--container")
    rest = [a for a in args if a not in ("-i", "--stdin", "-t", "--tty", "-it", "-ti", "-q",
                                         "--quiet")]
    if command is None and len(rest) > 1:
        sys.stderr.write("kubectl exec [POD] [COMMAND] is DEPRECATED and will be removed in a "
                         "future version. Use kubectl exec [POD] -- [COMMAND] instead.\n")
        command, rest = rest[1:], rest[:1]
    if not rest:
        raise StandinError("error: pod, type/name or --filename must be specified\n"
                           "See 'kubectl exec -h' for help and examples")
    if not command:
        raise StandinError("error: you must specify at least one command for the container")
    name = rest[0].split("/", 1)[1] if rest[0].startswith(("pod/", "pods/", "po/")) \
        else rest[0]
    namespace = namespaces[-1] if namespaces else "default"
    config = cluster_config(client)
    objects = client.call("GET", "/kubecrate/v1/objects")["items"]
    nodes = node_status(client, client.call("GET", "/api/v1/nodes")["items"], objects, config)
    pods = synthetic_pods(client, nodes, objects, config)
    pod = next((p for p in pods if p["metadata"]["name"] == name
                and p["metadata"]["namespace"] == namespace), None)
    if pod is None:
        raise StandinError('Error from server (NotFound): pods "%s" not found' % name)
    wanted = containers[-1] if containers else pod["spec"]["containers"][0]["name"]
    status = next((c for c in pod["status"]["containerStatuses"] if c["name"] == wanted), {})
    if "running" not in (status.get("state") or {}):
        raise StandinError('error: unable to upgrade connection: container not found ("%s")'
                           % wanted)
    if not _podexec.image_has(status["image"], command[0]):
        oci = "OCI runtime exec failed: exec failed: %s: exec: \"%s\": executable file " \
              "not found in $PATH: unknown" % (
                  "container_linux.go:380: starting container process caused" if MINOR <= 23
                  else "unable to start container process", command[0])
        if MINOR > 23:  # containerd's CRI fails the exec before any stream (kubelet: 500)
            raise StandinError("error: Internal error occurred: error executing command in "
                               "container: failed to exec in container: failed to start exec "
                               '"%s": %s' % ("0" * 64, oci))
        print(oci)  # dockershim streams docker's exec error, then its exit code 126
        sys.stderr.write("command terminated with exit code 126\n")
        return 126
    networking = config.get("networking") or {}
    if pod["metadata"]["labels"].get("k8s-app") == "calico-node":
        if command[0].rsplit("/", 1)[-1] != "ping":
            raise StandinError("the stand-in models ping in calico-node pods, not %s"
                               % command[0])
        code, out = _calico.ping(calico_results(nodes, objects,
                                                networking.get("podSubnet") or ""),
                                 pod["spec"]["nodeName"], command[1:])
        sys.stdout.write(out)
        if code:
            sys.stderr.write("command terminated with exit code %d\n" % code)
        return code
    if pod["metadata"]["labels"].get("app") != "flannel":
        raise StandinError("the stand-in runs commands in kube-flannel and calico-node pods "
                           "only")
    model = _podexec.Model(
        nodes, {n["metadata"]["name"]: _podnet.flannel_on(n, objects) for n in nodes},
        {n["metadata"]["name"]: n["spec"]["podCIDR"] for n in nodes
         if (n.get("spec") or {}).get("podCIDR")},
        [p["spec"]["nodeName"] for p in pods if p["metadata"]["labels"].get("k8s-app") ==
         "kube-dns" and p["status"]["conditions"][0]["status"] == "True"],
        networking.get("serviceSubnet") or "10.96.0.0/12",
        networking.get("dnsDomain") or "cluster.local")
    code, out = _podexec.run(model, pod["spec"]["nodeName"], command)
    sys.stdout.write(out)
    if code:
        sys.stderr.write("command terminated with exit code %d\n" % code)
    return code


def cmd_delete(client, args):
    """`kubectl delete node NAME...`: what an operator runs before a reset node rejoins under
    the same name (kubeadm join refuses a name that is still registered and Ready)."""
    what = [a for a in args if not a.startswith("-")]
    if len(what) < 2 or what[0].lower() not in ("node", "nodes", "no"):
        raise StandinError("error: the stand-in deletes nodes only: kubectl delete node NAME")
    known = {n["metadata"]["name"] for n in client.call("GET", "/api/v1/nodes")["items"]}
    for name in what[1:]:
        if name not in known:
            raise StandinError('Error from server (NotFound): nodes "%s" not found' % name)
        client.call("DELETE", "/api/v1/nodes/" + name)
        print('node "%s" deleted' % name)


def _daemonset_pod(pod) -> bool:
    """kube-flannel-ds-* and calico-node-*: the model's DaemonSet pods."""
    labels = pod["metadata"]["labels"]
    return labels.get("app") == "flannel" or labels.get("k8s-app") == "calico-node"


def cmd_cordon(client, args, verb):
    """`kubectl cordon|uncordon|drain NODE`: spec.unschedulable set (or cleared), as
    kubectl/pkg/drain/cordon.go CordonHelper does. drain then evicts the node's pods, and
    refuses DaemonSet-managed ones (kube-flannel, calico-node) unless --ignore-daemonsets
    (kubectl/pkg/drain/filters.go daemonSetFilter: "cannot delete DaemonSet-managed Pods (use
    --ignore-daemonsets to ignore)"); mirror pods of static pods (etcd) are left alone, as
    filters.go mirrorPodFilter does."""
    names = [a for a in args if not a.startswith("-")]
    if len(names) != 1:
        raise StandinError("error: USAGE: %s NODE [flags]" % verb)
    name = names[0]
    node = next((n for n in client.call("GET", "/api/v1/nodes")["items"]
                 if n["metadata"]["name"] == name), None)
    if node is None:
        raise StandinError('Error from server (NotFound): nodes "%s" not found' % name)
    want = verb != "uncordon"
    spec = node.setdefault("spec", {})
    if bool(spec.get("unschedulable")) == want:
        print("node/%s already %s" % (name, "cordoned" if want else "uncordoned"))
    else:
        if want:
            spec["unschedulable"] = True
        else:
            spec.pop("unschedulable", None)
        client.call("PUT", "/api/v1/nodes/" + name, node)
        print("node/%s %s" % (name, "cordoned" if want else "uncordoned"))
    if verb != "drain":
        return 0
    objects = client.call("GET", "/kubecrate/v1/objects")["items"]
    config = cluster_config(client)
    nodes = node_status(client, client.call("GET", "/api/v1/nodes")["items"], objects, config)
    mine = [p for p in synthetic_pods(client, nodes, objects, config)
            if p["spec"]["nodeName"] == name and not p["metadata"]["name"].startswith("etcd-")]
    daemons = ["%s/%s" % (p["metadata"]["namespace"], p["metadata"]["name"]) for p in mine
               if _daemonset_pod(p)]
    if daemons and "--ignore-daemonsets" not in args:
        raise StandinError("error: unable to drain node \"%s\" due to error: cannot delete "
                           "DaemonSet-managed Pods (use --ignore-daemonsets to ignore): %s, "
                           "continuing command...\nThere are pending nodes to be drained:\n %s"
                           % (name, ", ".join(daemons), name))
    if daemons:
        sys.stderr.write("Warning: ignoring DaemonSet-managed Pods: %s\n" % ", ".join(daemons))
    for pod in mine:
        if _daemonset_pod(pod):
            continue
        print("evicting pod %s/%s" % (pod["metadata"]["namespace"], pod["metadata"]["name"]))
        print("pod/%s evicted" % pod["metadata"]["name"])
    print("node/%s drained" % name)
    return 0


def main(argv):
    opts, args = split_globals(argv)
    try:
        if not args or args[0] in ("-h", "--help"):
            print("kubectl stand-in %s: version --client, apply -f, get, exec, delete node, "
                  "cordon, uncordon, drain"
                  % VERSION)
        elif args[0] == "version":
            cmd_version(args[1:])
        elif args[0] == "apply":
            cmd_apply(Client(opts), args[1:])
        elif args[0] == "get":
            cmd_get(Client(opts), args[1:])
        elif args[0] == "delete":
            cmd_delete(Client(opts), args[1:])
        elif args[0] == "exec":
            return cmd_exec(Client(opts), args[1:])
        elif args[0] in ("cordon", "uncordon", "drain"):
            return cmd_cordon(Client(opts), args[1:], args[0])
        else:
            raise StandinError('error: unknown command "%s" for "kubectl" (stand-in)' % args[0])
    except StandinError as exc:
        sys.stderr.write("%s\n" % exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
