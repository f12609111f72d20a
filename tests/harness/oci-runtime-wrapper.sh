#!/bin/sh
# TEST-ENVIRONMENT WORKAROUND (dockmoat-test), not part of dockmoat.
# Fast front end of the CAP_SYS_RESOURCE runtime wrapper: it sits in the path of
# every runc call, so it goes straight to runc unless the spec of a create/run/exec
# provably mentions CAP_SYS_RESOURCE; only then (or when unsure) does it hand over
# to the Python editor, which removes the capability and then execs runc itself.
runc=$(command -v runc) || runc=/usr/sbin/runc

cmd= skip=
for a do
	if [ -n "$skip" ]; then skip=; continue; fi
	case $a in
	--root | --log | --log-format | --criu | --rootless) skip=1 ;;
	--) break ;;
	-*) ;;
	*) cmd=$a; break ;;
	esac
done

case $cmd in
create | run) long=--bundle short=-b ;;
exec) long=--process short=-p ;;
*) exec "$runc" "$@" ;;
esac

value= take= seen=
for a do
	if [ -z "$seen" ]; then [ "$a" = "$cmd" ] && seen=1; continue; fi
	if [ -n "$take" ]; then value=$a take=; continue; fi
	case $a in
	--) break ;;
	"$long" | "$short") take=1 ;;
	"$long"=* | "$short"=*) value=${a#*=} ;;
	esac
done
if [ "$cmd" = exec ]; then spec=$value; else spec=${value:-.}/config.json; fi

if [ -n "$spec" ] && [ -f "$spec" ]; then
	grep -q CAP_SYS_RESOURCE "$spec"
	# 1 = readable and without the capability: nothing to edit. 0 or an error: the editor decides.
	[ $? -eq 1 ] && exec "$runc" "$@"
fi
exec @PYTHON@ -IS @EDITOR@ "$@"
