package app

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"os"
	"path"
	"strings"
	"sync"

	"github.com/aws/aws-lambda-go/events"
	"github.com/aws/aws-lambda-go/lambda"
	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	awskms "github.com/aws/aws-sdk-go-v2/service/kms"
	awssqs "github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/awslabs/aws-lambda-go-api-proxy/httpadapter"

	"github.com/certfleet/certfleet/shared/config"
	"github.com/certfleet/certfleet/shared/keys"
	"github.com/certfleet/certfleet/shared/keys/kms"
	"github.com/certfleet/certfleet/shared/mail"
	"github.com/certfleet/certfleet/shared/queue/sqs"
	"github.com/certfleet/certfleet/shared/store/dynamo"
	"github.com/certfleet/certfleet/shared/worker"
)

// Lambda builds the AWS shape from the environment: DynamoDB tables named
// CERTFLEET_TABLE_PREFIX + table, the SQS issuance queue and its DLQ, and a
// KMS key. AWS endpoints and credentials come from the SDK's standard
// sources (so AWS_ENDPOINT_URL points it at LocalStack or moto). No network
// call is made here: the SMTP password is read from SSM at the first mail.
func Lambda(ctx context.Context, opts ...Option) (*App, error) {
	cfg, err := config.Load(config.Lambda, os.Getenv)
	if err != nil {
		return nil, err
	}
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx)
	if err != nil {
		return nil, fmt.Errorf("app: AWS configuration: %w", err)
	}
	a := &App{
		Config: cfg,
		Log:    newLogger(cfg),
		Store:  dynamo.New(dynamodb.NewFromConfig(awsCfg), cfg.TablePrefix, Tables),
		Queue:  sqs.New(awssqs.NewFromConfig(awsCfg), cfg.IssuanceQueueURL, cfg.IssuanceDLQURL),
		Sealer: keys.NewEnvelope(kms.New(awskms.NewFromConfig(awsCfg), cfg.KMSKeyID)),
		Steps:  &worker.Registry{},
	}
	var m mail.Sender = &ssmMailer{build: func(ctx context.Context) (mail.Sender, error) {
		password, err := smtpPassword(ctx, awsCfg, cfg.SMTP.PasswordSSM)
		if err != nil {
			return nil, err
		}
		return newMailer(cfg, a, password)
	}}
	if cfg.SMTP.PasswordSSM == "" {
		if m, err = newMailer(cfg, a, ""); err != nil {
			return nil, fmt.Errorf("app: %w", err)
		}
	}
	if err := a.wireServices(m, collect(opts)); err != nil {
		return nil, err
	}
	return a, nil
}

// ssmMailer builds the SMTP sender on the first Send, reading its password
// from SSM then: only the functions that send mail read the parameter (and
// only they may). A failed build is tried again on the next Send.
type ssmMailer struct {
	mu     sync.Mutex
	build  func(context.Context) (mail.Sender, error)
	sender mail.Sender
}

func (l *ssmMailer) Send(ctx context.Context, m mail.Message) error {
	l.mu.Lock()
	if l.sender == nil {
		s, err := l.build(ctx)
		if err != nil {
			l.mu.Unlock()
			return err
		}
		l.sender = s
	}
	s := l.sender
	l.mu.Unlock()
	return s.Send(ctx, m)
}

// smtpPassword reads the mail server password from its SSM SecureString.
func smtpPassword(ctx context.Context, awsCfg aws.Config, name string) (string, error) {
	if name == "" {
		return "", nil
	}
	out, err := ssm.NewFromConfig(awsCfg).GetParameter(ctx, &ssm.GetParameterInput{Name: aws.String(name), WithDecryption: aws.Bool(true)})
	if err != nil {
		return "", fmt.Errorf("app: read the SMTP password from SSM parameter %s: %w", name, err)
	}
	return aws.ToString(out.Parameter.Value), nil
}

// StartHTTP is the whole main of a route group's Lambda function: it builds
// the AWS shape and serves handler(app) to API Gateway, e.g.
// app.StartHTTP((*app.App).AuthHandler). Like a main, it exits the process
// when the shape cannot be built (the error goes to the function's log).
func StartHTTP(handler func(*App) http.Handler) {
	lambda.Start(HTTPLambda(handler(mustLambda())))
}

// StartWorker is the whole main of the worker's Lambda function.
func StartWorker(opts ...Option) { lambda.Start(mustLambda(opts...).WorkerLambda()) }

// StartRenewal is the whole main of the renewal function, which an
// EventBridge schedule invokes: one renewal scan per invocation.
func StartRenewal() { lambda.Start(mustLambda().RenewalLambda()) }

// RenewalLambda is the renewal function's handler: the schedule's event
// carries nothing it needs; each invocation is one renewal scan.
func (a *App) RenewalLambda() func(context.Context, events.EventBridgeEvent) error {
	return func(ctx context.Context, _ events.EventBridgeEvent) error { return a.ScanRenewals(ctx) }
}

func mustLambda(opts ...Option) *App {
	a, err := Lambda(context.Background(), opts...)
	if err != nil {
		log.Fatal(err)
	}
	return a
}

// HTTPHandlerFunc is what an HTTP Lambda function starts: API Gateway HTTP
// API (payload v2) events in, responses out.
type HTTPHandlerFunc func(context.Context, events.APIGatewayV2HTTPRequest) (events.APIGatewayV2HTTPResponse, error)

// HTTPLambda adapts a route group's handler to API Gateway HTTP API events.
func HTTPLambda(h http.Handler) HTTPHandlerFunc {
	return httpadapter.NewV2(h).ProxyWithContext
}

// WorkerLambda is the worker function's SQS handler: each record is
// dispatched to its step handler, and exactly the failed records are
// reported back as batchItemFailures for redelivery.
// Records from the dead-letter queue (its own event source) are messages
// that failed every delivery: their issues are marked failed (abandon).
func (a *App) WorkerLambda() func(context.Context, events.SQSEvent) (events.SQSEventResponse, error) {
	live, dead := sqs.LambdaHandler(a.Steps.Dispatch), sqs.LambdaHandler(a.abandon)
	dlq := ":" + path.Base(a.Config.IssuanceDLQURL)
	return func(ctx context.Context, ev events.SQSEvent) (events.SQSEventResponse, error) {
		if len(ev.Records) > 0 && strings.HasSuffix(ev.Records[0].EventSourceARN, dlq) {
			return dead(ctx, ev) // one event source mapping: one queue per event
		}
		return live(ctx, ev)
	}
}
