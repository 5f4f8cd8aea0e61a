package profile

import (
	"context"
	"fmt"
	"reflect"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/riposte-dev/riposte/api/v1alpha1"
)

// Writer turns a learner's reports into WorkloadProfiles: it creates the
// profile of a new workload and container, adds what was learnt to an
// unreviewed one, and marks a reviewed one Stale when its workload runs
// another image. It never changes a reviewed profile's spec. Each report
// costs at most one read and two writes (spec, status).
type Writer struct {
	Client client.Client
	// Reader, when set, reads the profile around a cache, so a write after
	// another node's is not refused again on a stale copy.
	Reader client.Reader
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Write applies one report.
func (w *Writer) Write(ctx context.Context, r Report) error {
	now := metav1.NewTime(time.Now())
	if w.Now != nil {
		now = metav1.NewTime(w.Now())
	}
	key := client.ObjectKey{Namespace: r.Key.Namespace, Name: r.Key.Name()}
	var wp v1alpha1.WorkloadProfile
	var reader client.Reader = w.Client
	if w.Reader != nil {
		reader = w.Reader
	}
	err := reader.Get(ctx, key, &wp)
	switch {
	case apierrors.IsNotFound(err):
		wp = v1alpha1.WorkloadProfile{
			ObjectMeta: metav1.ObjectMeta{Name: key.Name, Namespace: key.Namespace},
			Spec: v1alpha1.WorkloadProfileSpec{
				Workload:  v1alpha1.ProfileWorkloadRef{Kind: r.Key.Kind, Name: r.Key.Workload},
				Container: r.Key.Container, Image: r.Image,
			},
		}
		Merge(&wp.Spec.ProfileBehaviour, r.Behaviour)
		if err := w.Client.Create(ctx, &wp); err != nil {
			return fmt.Errorf("create WorkloadProfile %s: %w", key, err)
		}
		return w.writeStatus(ctx, &wp, r, now, true)
	case err != nil:
		return fmt.Errorf("get WorkloadProfile %s: %w", key, err)
	}
	if KeyOfProfile(&wp) != r.Key {
		// A profile of this name describes another workload (a person made
		// it): leave it alone.
		return fmt.Errorf("WorkloadProfile %s is for %s %s container %s, not %s %s container %s",
			key, wp.Spec.Workload.Kind, wp.Spec.Workload.Name, wp.Spec.Container, r.Key.Kind, r.Key.Workload, r.Key.Container)
	}
	if !wp.Spec.Reviewed {
		before := wp.Spec.DeepCopy()
		if wp.Spec.Image != r.Image && r.Image != "" {
			// A new image while learning: learn it afresh.
			wp.Spec.Image = r.Image
			wp.Spec.ProfileBehaviour = v1alpha1.ProfileBehaviour{}
			wp.Status.LearningSince = nil
		}
		cut := Merge(&wp.Spec.ProfileBehaviour, r.Behaviour)
		r.Truncated += cut
		if !reflect.DeepEqual(before, &wp.Spec) {
			if err := w.Client.Update(ctx, &wp); err != nil {
				return fmt.Errorf("update WorkloadProfile %s: %w", key, err)
			}
		}
	}
	return w.writeStatus(ctx, &wp, r, now, false)
}

// writeStatus sets the conditions: Learning while unreviewed; Ready when
// reviewed for the image running; Stale from the first report of another
// image until the spec changes (a new review).
func (w *Writer) writeStatus(ctx context.Context, wp *v1alpha1.WorkloadProfile, r Report, now metav1.Time, created bool) error {
	st := wp.Status.DeepCopy()
	if st.ObservedGeneration != wp.Generation {
		// A new spec (a review, or new learnt entries): judge it afresh.
		apimeta.RemoveStatusCondition(&st.Conditions, v1alpha1.StaleCondition)
	}
	st.ObservedGeneration = wp.Generation
	if r.Image != "" {
		st.RunningImage = r.Image
	}
	setCond := func(typ string, status bool, reason, msg string) {
		s := metav1.ConditionFalse
		if status {
			s = metav1.ConditionTrue
		}
		apimeta.SetStatusCondition(&st.Conditions, metav1.Condition{Type: typ, Status: s, Reason: reason, Message: msg,
			ObservedGeneration: wp.Generation, LastTransitionTime: now})
	}
	switch {
	case !wp.Spec.Reviewed:
		if st.LearningSince == nil {
			st.LearningSince = &now
		}
		st.Truncated += r.Truncated
		msg := fmt.Sprintf("learning %s from %d pods; review and export it (riposte profile export)", wp.Spec.Image, r.Pods)
		setCond(v1alpha1.LearningCondition, true, v1alpha1.NotReviewedReason, msg)
		setCond(v1alpha1.ReadyCondition, false, v1alpha1.NotReviewedReason, msg)
	case (wp.Spec.Image != "" && r.Image != "" && r.Image != wp.Spec.Image) || apimeta.IsStatusConditionTrue(st.Conditions, v1alpha1.StaleCondition):
		msg := fmt.Sprintf("the workload runs %s, the profile was reviewed for %s", st.RunningImage, wp.Spec.Image)
		if c := apimeta.FindStatusCondition(st.Conditions, v1alpha1.StaleCondition); c != nil && c.Status == metav1.ConditionTrue {
			msg = c.Message // keep the image that made it stale
		}
		setCond(v1alpha1.StaleCondition, true, v1alpha1.ImageChangedReason, msg)
		setCond(v1alpha1.ReadyCondition, false, v1alpha1.ImageChangedReason, msg)
		setCond(v1alpha1.LearningCondition, false, v1alpha1.ReviewedReason, "learning stopped: the profile is reviewed")
	default:
		msg := "reviewed profile for image " + wp.Spec.Image
		setCond(v1alpha1.ReadyCondition, true, v1alpha1.ReviewedReason, msg)
		setCond(v1alpha1.StaleCondition, false, v1alpha1.ReviewedReason, msg)
		setCond(v1alpha1.LearningCondition, false, v1alpha1.ReviewedReason, "learning stopped: the profile is reviewed")
	}
	if !created && reflect.DeepEqual(st, &wp.Status) {
		return nil
	}
	wp.Status = *st
	if err := w.Client.Status().Update(ctx, wp); err != nil {
		return fmt.Errorf("update WorkloadProfile %s/%s status: %w", wp.Namespace, wp.Name, err)
	}
	return nil
}
