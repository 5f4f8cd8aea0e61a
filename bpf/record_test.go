package bpf

import (
	"encoding/binary"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/riposte-dev/riposte/engine"
)

// execRecord builds an exec record the way c/sensors.bpf.c lays it out.
func execRecord(bin string, args []string) []byte {
	var argv []byte
	for _, a := range args {
		argv = append(argv, a...)
		argv = append(argv, 0)
	}
	b := make([]byte, execArgsData+len(argv))
	b[0] = kExec
	binary.LittleEndian.PutUint16(b[2:], uint16(len(b)))
	binary.LittleEndian.PutUint64(b[8:], uint64(time.Second))
	binary.LittleEndian.PutUint32(b[16:], 42)
	binary.LittleEndian.PutUint32(b[20:], 42)
	binary.LittleEndian.PutUint32(b[24:], 1)
	binary.LittleEndian.PutUint32(b[28:], 1000)
	copy(b[56:], "sh")
	binary.LittleEndian.PutUint64(b[execIno:], 77)
	binary.LittleEndian.PutUint32(b[execFlags:], exeUpper)
	binary.LittleEndian.PutUint16(b[execBinLen:], uint16(len(bin)))
	binary.LittleEndian.PutUint16(b[execArgsLen:], uint16(len(argv)))
	copy(b[execData:], bin)
	copy(b[execArgsData:], argv)
	return b
}

func TestDecodeExecRecord(t *testing.T) {
	d := Decoder{Boot: time.Unix(1000, 0), Node: "n1"}
	var ev engine.Event
	if _, err := d.Decode(execRecord("/bin/sh", []string{"sh", "-c", "id"}), &ev); err != nil {
		t.Fatal(err)
	}
	p := ev.Process
	if ev.Kind != engine.KindExec || ev.Node != "n1" || !ev.Time.Equal(time.Unix(1001, 0)) ||
		p.PID != 42 || p.PPID != 1 || p.UID != 1000 || p.Comm != "sh" || p.Binary != "/bin/sh" ||
		!slices.Equal(p.Args, []string{"sh", "-c", "id"}) || p.Exe.Inode != 77 || !p.Exe.Upper || p.Exe.Memfd {
		t.Fatalf("decoded %+v", ev)
	}
}

func TestDecodeRejectsRecordsShorterThanTheirLayout(t *testing.T) {
	d := Decoder{}
	var ev engine.Event
	rec := execRecord("/bin/sh", []string{"sh"})
	for _, n := range []int{0, 10, hdrSize - 1, hdrSize, execData + 10} {
		b := slices.Clone(rec[:n])
		if n >= 4 {
			binary.LittleEndian.PutUint16(b[2:], uint16(n))
		}
		if _, err := d.Decode(b, &ev); !errors.Is(err, ErrShortRecord) {
			t.Errorf("%d bytes: err = %v, want ErrShortRecord", n, err)
		}
	}
	rec[0] = 99
	if _, err := d.Decode(rec, &ev); !errors.Is(err, ErrUnknownKind) {
		t.Errorf("kind 99: err = %v, want ErrUnknownKind", err)
	}
}

// FuzzDecode: no input makes the decoder panic or read out of bounds.
func FuzzDecode(f *testing.F) {
	f.Add(execRecord("/usr/bin/curl", []string{"curl", "http://x"}))
	for _, k := range []uint8{kOpen, kConnect, kListen, kFork, kExit, kMount, kSetuid, kCapset} {
		b := make([]byte, sysSize)
		b[0] = k
		binary.LittleEndian.PutUint16(b[2:], uint16(len(b)))
		binary.LittleEndian.PutUint32(b[sysSC:], 13)
		b[netFamily] = 6
		f.Add(b)
	}
	d := Decoder{}
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev engine.Event
		d.Decode(b, &ev)
	})
}
